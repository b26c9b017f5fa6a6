"""Fine-tuning a pretrained token policy (docs/finetuning.md): pretrain_bc.py end to end, its file loaded by every
arm (--init-from), refused when made for another run, the critic warm-up (--critic-warmup-iterations), the prior arm
(ppo_prior_mask.py) and an exact kill/resume of a fine-tuning run."""

import json
import math
import os
import runpy
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_end_to_end import kill_after_checkpoint

from conftest import ROOT, comparable, read_csv, run_script

K = 16  # a small vocabulary keeps every run here fast; nothing below depends on its size
# one 64-step PPO iteration per 64 steps, no evaluation
TINY_RUN = [
    "--env-id",
    "reach-v3",
    "--num-bins",
    str(K),
    "--num-steps",
    "64",
    "--minibatch-size",
    "64",
    "--update-epochs",
    "1",
    "--eval-interval",
    "0",
]
MASKS_NOW = ["--mask-warmup-start", "0", "--mask-warmup-end", "1"]  # the full budget from the first step
ARMS = [
    ("ppo_vanilla.py", []),
    ("ppo_random_mask.py", MASKS_NOW),
    ("ppo_utility_mask.py", MASKS_NOW),
    ("ppo_loss_shaping.py", []),
    ("ppo_offpolicy_utility_mask.py", MASKS_NOW),
    ("ppo_prior_mask.py", MASKS_NOW),
]
# the actor's 6 tensors in every arm's PPO optimizer: agent.parameters() lists the critic's first
ACTOR_INDICES = range(6, 12)


def make_pretrained(tmp_path_factory, action_head: str):
    """A tiny pretrain_bc.py file (2 demonstrations, 200 Adam steps, observations standardized): (path, result)."""
    path = tmp_path_factory.mktemp("pretrained") / f"reach_{action_head}.pt"
    result = subprocess_run(
        "pretrain_bc.py",
        "--action-head",
        action_head,
        "--env-id",
        "reach-v3",
        "--demos",
        "2",
        "--num-bins",
        str(K),
        "--train-steps",
        "200",
        "--batch-size",
        "64",
        "--eval-episodes",
        "1",
        "--seed",
        "3",
        "--out",
        str(path),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return path, result


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory):
    return make_pretrained(tmp_path_factory, "categorical")


@pytest.fixture(scope="session")
def pretrained_poisson(tmp_path_factory):
    return make_pretrained(tmp_path_factory, "poisson")


def subprocess_run(script, *flags):
    return subprocess.run(
        [sys.executable, str(ROOT / script), *flags],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def run_in_process(monkeypatch, script, *flags) -> dict:
    """The real script run in this process (its imports are already here, so it starts in a fraction of the time):
    its module globals at the end."""
    monkeypatch.setattr(sys, "argv", [script, *flags])
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:  # the run's own Ctrl-C/SIGTERM handlers would outlive it in this process (pytest's worker)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def actor_of(state: dict) -> dict:
    return {k[len("actor.") :]: v for k, v in state.items() if k.startswith("actor.")}


# --- pretrain_bc.py ----------------------------------------------------------------------------------------------


def test_pretrain_bc_writes_one_file_with_the_actor_and_its_recipe(pretrained):
    import ppo_vanilla

    path, result = pretrained
    payload = load(path)
    assert set(payload) == {"actor", "obs_rms", "recipe"}
    recipe = payload["recipe"]
    assert {
        k: recipe[k]
        for k in (
            "env_id",
            "num_bins",
            "action_head",
            "obs_dim",
            "norm_obs",
            "demos",
            "action_noise",
            "demo_steps",
            "train_steps",
            "seed",
            "failed_demos_kept",
        )
    } == {
        "env_id": "reach-v3",
        "num_bins": K,
        "action_head": "categorical",
        "obs_dim": 39,
        "norm_obs": True,
        "demos": 2,
        "action_noise": 0.1,
        "demo_steps": 1000,
        "train_steps": 200,
        "seed": 3,
        "failed_demos_kept": True,
    }
    assert recipe["epochs"] == pytest.approx(200 * 64 / 1000) and recipe["eval_seed"] == 10_003
    # it learned: the untrained actor's uniform logits cost log K per token
    assert 0 < recipe["bc_loss"] < math.log(K) - 0.5 and 0 < recipe["token_accuracy"] <= 1
    for mode in ("sampled", "greedy"):  # an episode that succeeds at its last step succeeded at some step
        assert 0 <= recipe["success"][mode]["last"] <= recipe["success"][mode]["any"] <= 1
    assert recipe["git_revision"] and recipe["code_sha256"]
    # the observation statistics of the 1,000 demonstration steps, as the arms' RunningMeanStd holds them
    assert (
        payload["obs_rms"]["count"] == pytest.approx(1000, abs=1e-3)
        and payload["obs_rms"]["mean"].dtype == torch.float64
    )
    agent = ppo_vanilla.Agent(39, K)
    agent.actor.load_state_dict(payload["actor"])  # strict: the arms' actor, tensor for tensor
    assert f"wrote {path}" in result.stdout
    assert json.loads(path.with_suffix(".json").read_text()) == json.loads(json.dumps(recipe))  # the recipe beside it


def test_pretrain_bc_refuses_bad_input_in_one_line(tmp_path, monkeypatch, capsys):
    import pretrain_bc

    def refused(args, hint):
        with pytest.raises(SystemExit) as e:
            pretrain_bc.check_args(args)
        lines = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and hint in lines[0], lines

    taken = tmp_path / "taken.pt"
    taken.write_bytes(b"a fine-tuning run's file")
    refused(pretrain_bc.Args(out=str(taken), env_id="reach-v2"), f"--out {taken} exists")
    assert taken.read_bytes() == b"a fine-tuning run's file"
    refused(pretrain_bc.Args(out=str(tmp_path / "new.pt"), demos=0), "--demos")
    monkeypatch.setattr(pretrain_bc, "ENV_POLICY_MAP", {})  # as on a MetaWorld whose task has no scripted expert
    refused(pretrain_bc.Args(out=str(tmp_path / "new.pt"), env_id="reach-v3"), "no scripted expert for reach-v3")


def test_demonstrations_label_the_expert_and_execute_the_noise():
    """DART: the label at every visited state is the expert's own (noiseless, clipped) action there, while the executed
    action carries the noise, which takes the episode to other states than the noiseless expert's."""
    import pretrain_bc

    expert = pretrain_bc.expert_policy("reach-v3")
    episodes = {}
    for noise in (0.0, 0.5):
        args = pretrain_bc.Args(out="unused", env_id="reach-v3", demos=1, action_noise=noise)
        obs, labels, _, _ = pretrain_bc.collect_demonstrations(args, np.random.default_rng(0))
        assert obs.shape == (500, 39) and labels.shape == (500, 4) and np.abs(labels).max() <= 1.0
        assert all(np.array_equal(labels[t], expert(obs[t])) for t in range(500))
        episodes[noise] = obs
    assert np.array_equal(episodes[0.0][0], episodes[0.5][0])  # the same first state (the same seed)...
    assert not np.allclose(episodes[0.0][1:], episodes[0.5][1:])  # ...then the noise moves the arm elsewhere


def test_labels_are_the_nearest_of_the_arms_bins():
    import ppo_vanilla
    import pretrain_bc

    bin_values = ppo_vanilla.Agent(39, K).bin_values.numpy()  # the arms' K values evenly spaced on [-1, 1]
    actions = np.random.default_rng(0).uniform(-1, 1, (1000, 4))
    tokens = pretrain_bc.discretize(actions, bin_values)
    assert np.abs(bin_values[tokens] - actions).max() <= 1 / (K - 1) + 1e-6  # within half a bin width (2 / (K - 1))
    assert np.array_equal(tokens, np.rint((actions + 1) / 2 * (K - 1)))  # the nearest bin: round to the grid
    edges = pretrain_bc.discretize(np.array([bin_values[:4], [-1, 1, 0.999, 0]]), bin_values)
    assert np.array_equal(edges[0], [0, 1, 2, 3]) and np.array_equal(edges[1, :3], [0, K - 1, K - 1])
    assert edges[1, 3] in (K // 2 - 1, K // 2)  # 0 lies midway between the two middle bins of an even K


# --- --init-from and --critic-warmup-iterations in every arm -----------------------------------------------------


@pytest.mark.parametrize("script,extra", ARMS, ids=[s[4:-3] for s, _ in ARMS])
def test_every_arm_starts_from_the_file_and_the_critic_warmup_keeps_its_actor(
    tmp_path, monkeypatch, pretrained, script, extra
):
    """3 iterations of 64 steps, the first 2 a critic warm-up: after each of those the actor is the file's, bit for
    bit, and Adam holds no state for it; the third trains it. The run starts from the file's observation statistics."""
    path, _ = pretrained
    payload = load(path)
    run_in_process(
        monkeypatch,
        script,
        "--runs-dir",
        str(tmp_path),
        *TINY_RUN,
        *extra,
        "--total-timesteps",
        "192",
        "--init-from",
        str(path),
        "--critic-warmup-iterations",
        "2",
        "--ref-kl-coef",
        "0.5",  # the pull toward the file's policy runs in every arm too (its effect: the test after the next)
        "--keep-checkpoints-at",
        "64",
        "128",
        "192",
    )
    run_dir = next(tmp_path.iterdir())
    ckpts = [torch.load(run_dir / f"checkpoint_step{step}.pt", weights_only=False) for step in (64, 128, 192)]
    for ckpt in ckpts[:2]:
        assert same_tensors(actor_of(ckpt["agent"]), payload["actor"])
        assert not set(ACTOR_INDICES) & set(ckpt["optimizer"]["state"])
    critic = lambda ckpt: {k: v for k, v in ckpt["agent"].items() if k.startswith("critic.")}  # noqa: E731
    assert not same_tensors(critic(ckpts[0]), critic(ckpts[1]))  # the critic trains through the warm-up
    assert not same_tensors(actor_of(ckpts[2]["agent"]), payload["actor"])
    assert set(ACTOR_INDICES) <= set(ckpts[2]["optimizer"]["state"])
    # the observation statistics continue from the file's (its 1,000 demonstration steps, then 64 per rollout)
    assert ckpts[0]["obs_rms"][2] == pytest.approx(payload["obs_rms"]["count"] + 64)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["init_from"] == str(path) and config["critic_warmup_iterations"] == 2
    assert config["ref_kl_coef"] == 0.5
    assert config["pretrained"]["success"] == payload["recipe"]["success"] and len(config["pretrained"]["sha256"]) == 64


def kl_to_the_file(actor_state: dict, payload: dict, arm: str) -> float:
    """Mean KL(actor || the file's actor) summed over the 4 dimensions, at 512 standardized observations."""
    module = __import__(arm.removesuffix(".py"))
    torch.manual_seed(0)
    obs = torch.randn(512, 39)
    log_probs = []
    for state in (actor_state, payload["actor"]):
        agent = module.Agent(39, K)
        agent.actor.load_state_dict(state)
        log_probs.append(agent.get_logits(obs).log_softmax(-1))
    return module.reference_kl(*log_probs).mean().item()


@pytest.mark.parametrize("script,extra", [ARMS[0], (ARMS[1][0], [*MASKS_NOW, "--mask-mode", "hard"])])
def test_ref_kl_coef_holds_the_policy_near_the_pretrained_one(tmp_path, monkeypatch, pretrained, script, extra):
    """The same seed fine-tuned with a large learning rate, with and without --ref-kl-coef: with it, the actor ends
    nearer the file's (in KL), in the unmasked arm and under a hard mask."""
    path, _ = pretrained
    payload = load(path)
    kls = {}
    for coef in ("0", "30"):
        runs = tmp_path / coef
        run_in_process(
            monkeypatch,
            script,
            "--runs-dir",
            str(runs),
            *TINY_RUN,
            *extra,
            "--total-timesteps",
            "192",
            "--learning-rate",
            "0.01",
            "--update-epochs",
            "4",
            "--target-kl",
            "None",
            "--init-from",
            str(path),
            "--ref-kl-coef",
            coef,
        )
        run_dir = next(runs.iterdir())
        ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
        kls[coef] = kl_to_the_file(actor_of(ckpt["agent"]), payload, script)
        metrics = read_csv(run_dir / "metrics.csv")
        # metrics.csv's ref_kl (the rollout policy's KL from the file's, before each update) only with the pull
        assert ("ref_kl" in metrics[0]) == (coef != "0")
        if coef != "0" and not extra:  # the unmasked policy starts as the file's: no distance at the first rollout
            assert abs(float(metrics[0]["ref_kl"])) < 1e-6 and float(metrics[-1]["ref_kl"]) > 0
    # (vanilla: ~0.6 -> ~0.1; under a hard mask the penalty sees only the bins the mask leaves, so the unmasked actor
    # measured here is held less: ~0.37 -> ~0.19; without the penalty the two runs would be the same run)
    assert kls["0"] > 0.05 and kls["30"] < 0.6 * kls["0"], kls


def unreadable(path, tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a pretrained file")
    return tmp_path / "bad.pt"


def edited(path, tmp_path, **recipe_changes):
    """A copy of the file whose recipe says otherwise (the weights unchanged)."""
    payload = load(path)
    payload["recipe"].update(recipe_changes)
    out = tmp_path / "edited.pt"
    torch.save(payload, out)
    return out


MISMATCHES = [
    ("task", lambda p, t: edited(p, t, env_id="pick-place-v3"), [], "env_id 'pick-place-v3' (this run: 'reach-v3')"),
    ("K", lambda p, t: p, ["--num-bins", "32"], f"num_bins {K} (this run: 32)"),
    ("head", lambda p, t: p, ["--action-head", "ordinal"], "action_head 'categorical' (this run: 'ordinal')"),
    ("obs-size", lambda p, t: edited(p, t, obs_dim=40), [], "obs_dim 40 (this run: 39)"),
    ("normalization", lambda p, t: p, ["--no-norm-obs"], "norm_obs True (this run: False)"),
    (
        "poisson-temperature",
        lambda p, t: edited(p, t, action_head="poisson"),
        ["--action-head", "poisson", "--poisson-temperature", "1.0"],
        "poisson_temperature 2.5 (this run: 1.0)",
    ),
    ("unreadable", unreadable, [], "is not a readable pretrain_bc.py file"),
]


@pytest.mark.parametrize("make_file,flags,hint", [m[1:] for m in MISMATCHES], ids=[m[0] for m in MISMATCHES])
def test_a_file_made_for_another_run_is_refused_in_one_line(
    tmp_path, monkeypatch, capsys, pretrained, make_file, flags, hint
):
    path = make_file(pretrained[0], tmp_path)
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as e:
        run_in_process(
            monkeypatch, "ppo_vanilla.py", "--runs-dir", str(runs), *TINY_RUN, *flags, "--init-from", str(path)
        )
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: --init-from {path} ") and hint in lines[0], lines[0]
    assert not runs.exists()  # refused before anything is written


@pytest.mark.parametrize(
    "flags,hint",
    [(["--ref-kl-coef", "0.1"], "pass --init-from FILE"), (["--ref-kl-coef", "-1"], "--ref-kl-coef must be >= 0")],
    ids=["without-init-from", "negative"],
)
def test_a_bad_ref_kl_coef_is_refused_in_one_line(tmp_path, monkeypatch, capsys, flags, hint):
    with pytest.raises(SystemExit) as e:
        run_in_process(monkeypatch, "ppo_vanilla.py", "--runs-dir", str(tmp_path / "runs"), *TINY_RUN, *flags)
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(lines) == 1 and hint in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_the_prior_arm_requires_a_pretrained_file(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:
        run_in_process(monkeypatch, "ppo_prior_mask.py", "--runs-dir", str(tmp_path / "runs"), *TINY_RUN)
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(lines) == 1 and "pass --init-from FILE" in lines[0], lines
    assert not (tmp_path / "runs").exists()


# --- ppo_prior_mask.py -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action_head", ["categorical", "poisson"])
def test_the_prior_masks_its_least_likely_bins_and_never_changes(tmp_path, monkeypatch, request, action_head):
    """Every step's stored mask is the budgeted bins of lowest probability under the file's policy at that state,
    computed here directly in torch with the file's weights and observation statistics; after training, the prior (in
    the run and in its checkpoint) is still the file's, while the fine-tuned actor and the run's statistics moved.
    Under both heads the fine-tuning grids use (the Poisson head's bins are ranked by its unimodal shape)."""
    import ppo_vanilla

    path, _ = request.getfixturevalue("pretrained" if action_head == "categorical" else "pretrained_poisson")
    payload = load(path)
    end = run_in_process(
        monkeypatch,
        "ppo_prior_mask.py",
        "--runs-dir",
        str(tmp_path),
        *TINY_RUN,
        *MASKS_NOW,
        "--action-head",
        action_head,
        "--total-timesteps",
        "128",
        "--mask-budget",
        "0.5",
        "--init-from",
        str(path),
    )
    reference = ppo_vanilla.Agent(39, K, action_head)
    reference.actor.load_state_dict(payload["actor"])
    stats = payload["obs_rms"]
    raw = torch.as_tensor(end["raw_obs_buf"].reshape(-1, 39))  # the last rollout's states
    x = ((raw - stats["mean"]) / torch.sqrt(stats["var"] + 1e-8)).clamp(-10, 10).float()
    with torch.no_grad():
        lowest = reference.get_log_probs(x).topk(K // 2, dim=-1, largest=False).indices  # budget 0.5 of K
    direct = torch.zeros(len(raw), 4, K, dtype=torch.bool).scatter_(-1, lowest, True)
    stored = torch.as_tensor(end["offsets_buf"].reshape(-1, 4, K)) < 0  # the soft penalty on every masked bin
    assert torch.equal(stored, direct)
    # the prior: frozen, in no optimizer, unchanged in the run and in its checkpoint
    prior, agent = end["prior"], end["agent"]
    assert not any(p.requires_grad for p in prior.parameters())
    assert sum(len(g["params"]) for g in end["optimizer"].param_groups) == len(list(agent.parameters()))
    assert same_tensors(actor_of(prior.state_dict()), payload["actor"])
    ckpt = torch.load(next(tmp_path.iterdir()) / "checkpoint.pt", weights_only=False)
    assert same_tensors(actor_of(ckpt["prior"]), payload["actor"])
    assert (
        np.array_equal(ckpt["prior_obs_rms"][0], stats["mean"].numpy()) and ckpt["prior_obs_rms"][2] == stats["count"]
    )
    assert not same_tensors(actor_of(ckpt["agent"]), payload["actor"]) and ckpt["obs_rms"][2] > stats["count"]


# --- resume ------------------------------------------------------------------------------------------------------


def test_a_killed_and_resumed_finetuning_run_equals_the_uninterrupted_one(tmp_path, pretrained):
    """The prior arm from the file, killed inside its critic warm-up and resumed: every number it records is the
    uninterrupted run's (the actor, the prior, both observation statistics and the warm-up all come back)."""
    path, _ = pretrained
    flags = [
        "--env-id",
        "reach-v3",
        "--num-bins",
        str(K),
        "--num-steps",
        "128",
        "--total-timesteps",
        "1536",
        "--update-epochs",
        "2",
        "--checkpoint-interval",
        "2",
        "--eval-interval",
        "512",
        "--eval-episodes",
        "1",
        "--mask-warmup-start",
        "0",
        "--mask-warmup-end",
        "512",
        "--init-from",
        str(path),
        "--critic-warmup-iterations",
        "3",
    ]
    assert run_script("ppo_prior_mask.py", tmp_path, *flags, "--exp-name", "straight").returncode == 0
    run_dir = tmp_path / "reach-v3__killed__1"
    kill_after_checkpoint("ppo_prior_mask.py", tmp_path, run_dir, [*flags, "--exp-name", "killed"], min_iteration=2)
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["iteration"] < 12
    result = run_script("ppo_prior_mask.py", tmp_path, *flags, "--exp-name", "killed", "--resume")
    assert result.returncode == 0 and "resuming" in result.stdout, result.stderr
    assert comparable(run_dir) == comparable(tmp_path / "reach-v3__straight__1")
    assert len(read_csv(run_dir / "metrics.csv")) == 12


# --- --cuda ------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_recaptured_when_the_critic_warmup_ends(tmp_path, pretrained):
    """--cuda captures the update as a CUDA graph; the one captured while the actor is frozen must not keep it frozen:
    2 iterations (the first a critic warm-up) on CUDA end where the CPU's end."""
    from test_cuda import PARAM_ATOL, checkpoint_tensors

    path, _ = pretrained
    flags = [
        "--env-id",
        "reach-v3",
        "--num-bins",
        str(K),
        "--num-steps",
        "512",
        "--total-timesteps",
        "1024",
        "--update-epochs",
        "2",
        "--eval-interval",
        "0",
        "--target-kl",
        "None",
        "--init-from",
        str(path),
        "--critic-warmup-iterations",
        "1",
    ]
    runs = {}
    for device, extra in (("cpu", []), ("cuda", ["--cuda"])):
        result = run_script("ppo_vanilla.py", tmp_path / device, *flags, *extra)
        assert result.returncode == 0, result.stderr[-2000:]
        runs[device] = checkpoint_tensors(next((tmp_path / device).iterdir()))
    assert runs["cpu"].keys() == runs["cuda"].keys()
    assert max((runs["cpu"][k] - runs["cuda"][k]).abs().max().item() for k in runs["cpu"]) < PARAM_ATOL
    assert not same_tensors(
        actor_of({k[len("agent.") :]: v for k, v in runs["cuda"].items() if k.startswith("agent.")}),
        load(path)["actor"],
    )


def test_compiled_update_follows_the_critic_warmup_without_a_recompilation_warning(tmp_path, pretrained):
    """--compile traces the step while the actor is frozen; when the warm-up ends the step gets its one new graph
    (expected, not a failed guard: no warning) and trains the actor as the eager update does."""
    from test_compile import PARAM_ATOL, checkpoint_tensors

    path, _ = pretrained
    flags = [
        "--env-id",
        "reach-v3",
        "--num-bins",
        str(K),
        "--num-steps",
        "512",
        "--total-timesteps",
        "1024",
        "--minibatch-size",
        "64",
        "--update-epochs",
        "2",
        "--eval-interval",
        "0",
        "--target-kl",
        "None",
        "--checkpoint-interval",
        "1",
        "--init-from",
        str(path),
        "--critic-warmup-iterations",
        "1",
    ]
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        result = run_script("ppo_prior_mask.py", tmp_path / name, *flags, *MASKS_NOW, *extra)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "compiled again" not in result.stderr
        runs[name] = checkpoint_tensors(next((tmp_path / name).iterdir()) / "checkpoint.pt")
    assert runs["eager"].keys() == runs["compiled"].keys()
    assert max((runs["eager"][k] - runs["compiled"][k]).abs().max().item() for k in runs["eager"]) < PARAM_ATOL
    assert not same_tensors(
        actor_of({k[len("agent.") :]: v for k, v in runs["compiled"].items() if k.startswith("agent.")}),
        load(path)["actor"],
    )


# --- grids.py and report.py ------------------------------------------------------------------------------------


def test_finetune_presets_name_their_pretrained_file_and_match_it():
    """Every fine-tuning cell names its file's recipe (_ft-d{demos}), --init-from's path is the recipe's, and the cell's
    vocabulary, head and regime are those the file is made for (else the arm would refuse it)."""
    import grids

    runs = grids.expand(presets=["finetune", "finetune_warmup"])
    assert len(runs) == 60 + 24 - 6  # the check's warm-up-5 vanilla runs (3 seeds x 2 tasks) are the main cells' own
    unstopped = [r for r in runs if grids.flag_text(r.cell.flags, "--target-kl") == "None"]
    assert len(unstopped) == 6 and all(
        grids.flag_text(r.cell.flags, "--critic-warmup-iterations") == str(grids.WARMUP_CHECK_UNSTOPPED)
        for r in unstopped
    )
    # read against the KL control's from-scratch cell (its name without the _ft- part)
    from reporting.sections.finetune import from_scratch_name

    assert {from_scratch_name(r.cell.exp_name) for r in unstopped} == {"ppo_vanilla_k256_no-target-kl_no-norm-obs"}
    assert "ppo_vanilla_k256_no-target-kl_no-norm-obs" in {c.exp_name for c in grids.KL_CONTROL_CELLS}
    for run in runs:
        pretrained = grids.FINETUNE_PRETRAINED[run.env_id]
        flags = run.cell.flags
        assert f"_ft-d{pretrained.demos}" in run.cell.exp_name and run.cell.exp_name.endswith("_no-norm-obs")
        assert grids.flag_text(flags, "--init-from") == pretrained.path and pretrained.path.startswith(
            "results/pretrained/"
        )
        assert (
            grids.flag_text(flags, "--num-bins") == "256" and grids.flag_text(flags, "--action-head") == "categorical"
        )
        assert "--no-norm-obs" in flags and grids.flag_text(flags, "--total-timesteps") == "300000"
    arms = {(r.cell.script, grids.flag_text(r.cell.flags, "--mask-budget")) for r in runs if r.seed == 5}
    assert arms == {
        ("ppo_vanilla.py", None),
        ("ppo_random_mask.py", None),
        ("ppo_utility_mask.py", None),
        ("ppo_prior_mask.py", None),
        ("ppo_prior_mask.py", "0.9"),
        ("ppo_random_mask.py", "0.9"),  # the prior 0.9's control
    }  # 0.25 is the arms' default budget


def test_the_poisson_cells_fine_tune_committed_poisson_files_and_read_against_scratch():
    """The Poisson stage (vanilla and prior 0.9 on button-press and handle-pull, the moonshot on pick-place): every run
    starts from a committed Poisson file of its own task whose recipe is in its name, with the head the file was
    trained with, and its from-scratch counterpart is the Poisson cell at K = 256."""
    import json
    from pathlib import Path

    import grids
    from reporting.sections.finetune import from_scratch_name

    runs = grids.expand(presets=["finetune_poisson", "finetune_pick_place"])
    assert len(runs) == 3 * 2 * 5 and {r.env_id for r in runs} == {"button-press-v3", "handle-pull-v3", "pick-place-v3"}
    for run in runs:
        pretrained = grids.FINETUNE_POISSON_PRETRAINED[run.env_id]
        path = grids.flag_text(run.cell.flags, "--init-from")
        assert path == pretrained.path and Path(path).is_file()
        recipe = json.loads(Path(path).with_suffix(".json").read_text())
        assert (recipe["env_id"], recipe["action_head"], recipe["num_bins"], recipe["demos"], recipe["seed"]) == (
            run.env_id,
            "poisson",
            256,
            pretrained.demos,
            pretrained.seed,
        )
        assert grids.flag_text(run.cell.flags, "--action-head") == "poisson"
        assert f"_poisson_k256_ft-{pretrained.tag}_no-norm-obs" in run.cell.exp_name
        assert from_scratch_name(run.cell.exp_name).endswith("_poisson_k256_no-norm-obs")
    assert {(r.cell.script, grids.flag_text(r.cell.flags, "--mask-budget")) for r in runs} == {
        ("ppo_vanilla.py", None),
        ("ppo_prior_mask.py", "0.9"),
    }


def test_the_ref_kl_cells_fine_tune_their_own_tasks_file():
    import grids

    runs = grids.expand(presets=["finetune_ref_kl"])
    assert len(runs) == 2 * 2 * 5
    for run in runs:
        assert grids.flag_text(run.cell.flags, "--init-from") == grids.FINETUNE_PRETRAINED[run.env_id].path
        coef = grids.flag_text(run.cell.flags, "--ref-kl-coef")
        assert coef in ("0.1", "1") and run.cell.exp_name.startswith(f"ppo_vanilla_ref-kl{coef}_k256_ft-d")


def test_grids_pretrain_prints_the_commands_that_write_the_files(capsys, monkeypatch, tmp_path):
    """One command per missing file (run from an empty folder: the committed files are left out in the repo)."""
    import grids

    monkeypatch.chdir(tmp_path)
    assert grids.main(["pretrain", "--preset", "finetune_button_press"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    pretrained = grids.FINETUNE_PRETRAINED["button-press-v3"]
    assert line.startswith("python pretrain_bc.py --env-id button-press-v3 --demos ") and "--no-norm-obs" in line
    assert line.endswith(f"--out {pretrained.path}")
    (tmp_path / pretrained.path).parent.mkdir(parents=True)
    (tmp_path / pretrained.path).touch()
    assert grids.main(["pretrain", "--preset", "finetune_button_press"]) == 0
    assert capsys.readouterr().out.strip() == ""  # a file that exists is not made again
    assert grids.main(["pretrain", "--calibration"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(grids.CALIBRATION) == 2 * 2 * 9 * 3 + 2 * 6 * 3  # + the second fine-tuning task's


def test_report_starts_finetuning_curves_at_the_pretrained_success_and_reads_them_against_scratch(tmp_path):
    """Synthetic runs (test_report's): a fine-tuning cell's curves begin at step 0 at its file's sampled success, and
    the fine-tuning section finds its from-scratch cell and the step at which it reaches that cell's final IQM."""
    from test_report import make_run, summary

    import report

    recipe = {
        "demos": 2,
        "action_head": "categorical",
        "num_bins": 4,
        "action_noise": 0.1,
        "success": {"sampled": {"any": 0.3, "last": 0.2}, "greedy": {"any": 0.0, "last": 0.0}},
    }
    runs_dir = tmp_path / "runs"
    for seed in range(1, 6):
        make_run(
            runs_dir,
            "button-press-v3",
            "ppo_vanilla_k4_ft-d2_cw5",
            seed,
            summary(0.9, 0.6, 4000),
            last_step={},
            settings={"init_from": "bp.pt", "pretrained": recipe},
        )
        make_run(runs_dir, "button-press-v3", "ppo_vanilla_k4", seed, summary(0.5, 0.4, 6000), last_step={})
    runs = {(run.exp_name, run.seed): run for run in report.find_runs(runs_dir)}
    tuned, scratch = runs[("ppo_vanilla_k4_ft-d2_cw5", 1)], runs[("ppo_vanilla_k4", 1)]
    assert tuned.steps[0] == 0 and tuned.metrics["success_rate"][0] == 0.3
    assert tuned.metrics["success_rate_last_step"][0] == 0.2 and math.isnan(tuned.metrics["policy_entropy"][0])
    assert len(tuned.steps) == len(scratch.steps) + 1 and scratch.steps[0] == 1000  # from scratch: no step-0 point
    assert report.from_scratch_name("ppo_vanilla_k256_ft-d25_cw5_no-norm-obs") == "ppo_vanilla_k256_no-norm-obs"
    assert report.main(["--runs-dir", str(runs_dir), "--out-dir", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    section = text.split("## Fine-tuning from a pretrained policy")[1]
    row = next(line for line in section.splitlines() if "ppo_vanilla_k4_ft-d2_cw5" in line)
    # the synthetic curves rise (i - 1) / 9 at step 1000 i: the scratch cell's final 0.5 is first reached at 6000
    assert "| 2 demos, categorical, K = 4, noise 0.1 | 0.300 |" in row and "ppo_vanilla_k4 (n=5" in row
    assert "| 0.500 | 6k (5/5 reached) |" in row


def test_report_tabulates_the_calibration(tmp_path):
    import report
    from training_run import write_json

    folder = tmp_path / "calibration"
    folder.mkdir()
    for demos, last in ((1, 0.1), (2, 0.4), (5, 0.8)):
        for seed in (1, 2):
            write_json(
                str(folder / f"bp_d{demos}_s{seed}.json"),
                {
                    "env_id": "button-press-v3",
                    "action_head": "categorical",
                    "num_bins": 256,
                    "norm_obs": False,
                    "action_noise": 0.1,
                    "demos": demos,
                    "seed": seed,
                    "bc_loss": 1.0,
                    "success": {
                        "sampled": {"any": 1.0, "last": last + 0.02 * seed},
                        "greedy": {"any": 0.0, "last": 0.0},
                    },
                },
            )
    out = tmp_path / "out"
    assert report.main(["--calibration", str(folder), "--out-dir", str(out), "--success-definition", "last"]) == 0
    text = (out / "calibration.md").read_text()
    assert "| button-press-v3 | categorical, K = 256, raw observations, noise 0.1 | 2 | 2 | 0.430 ± 0.010 |" in text
    assert "- button-press-v3, categorical, K = 256, raw observations, noise 0.1: 2 demonstrations" in text
    assert (out / "figures" / "calibration_last.png").stat().st_size > 0
