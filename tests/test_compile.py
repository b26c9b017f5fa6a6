"""--compile: the update compiled once with torch.compile (training_run.MinibatchStep) computes what the eager update
computes, is compiled once per run (annealing the learning rate never recompiles it), and works in every arm."""

import math

import pytest
import torch
import torch._dynamo
import torch.nn as nn

import training_run
from conftest import read_csv, run_script
from training_run import MinibatchStep


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles its own step: Dynamo's caches start empty (its recompilation limit counts per code object)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def make_step(lr_schedule_steps=20):
    """A small MLP, fused Adam (as the arms') and an arm-shaped gradient step: loss, zero_grad, backward, clip, step."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, eps=1e-5, fused=True)

    def step(x, y):
        loss = ((net(x) - y) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 0.5, foreach=True)
        optimizer.step()
        return (loss.detach(),)

    return net, optimizer, step


DATA = [
    (
        torch.randn(16, 8, generator=torch.Generator().manual_seed(i)),
        torch.randn(16, 3, generator=torch.Generator().manual_seed(100 + i)),
    )
    for i in range(20)
]


def test_the_compiled_step_takes_the_eager_steps_and_is_compiled_once():
    """20 compiled steps with an annealed learning rate (set as a number between steps, as the arms do) equal 20 eager
    ones, and after the first call nothing is compiled again."""
    results = []
    for compiled in (False, True):
        net, optimizer, step = make_step()
        run_step = MinibatchStep(step, optimizer, device=torch.device("cpu"), compile=compiled)
        losses = []
        for i, (x, y) in enumerate(DATA):
            optimizer.param_groups[0]["lr"] = 1e-2 * (1 - i / 20)
            losses.append(run_step(x, y)[0].item())
            assert isinstance(optimizer.param_groups[0]["lr"], float)  # checkpoints and metrics.csv keep a number
            if compiled and i == 0:
                after_first_call = training_run.dynamo_compilations()
        results.append((losses, [p.detach().clone() for p in net.parameters()], optimizer.state_dict()))
    assert training_run.dynamo_compilations() == after_first_call and run_step.recompilations == 0
    assert run_step.compile_seconds > 0
    (eager_losses, eager_params, _), (compiled_losses, compiled_params, compiled_state) = results
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(eager_params, compiled_params))
    assert float(compiled_state["state"][0]["step"]) == 20  # one optimizer step per call, none for compiling


def test_the_counter_sees_a_recompilation():
    """What the test above counts does count: a minibatch of another shape fails the compiled step's guards, and
    MinibatchStep reports it; the same step compiled with the learning rate left a number recompiles on annealing."""
    _, optimizer, step = make_step()
    run_step = MinibatchStep(step, optimizer, device=torch.device("cpu"), compile=True)
    run_step(*DATA[0])
    run_step(*DATA[1])
    assert run_step.recompilations == 0
    run_step(DATA[2][0][:8], DATA[2][1][:8])
    assert run_step.recompilations == 1

    torch._dynamo.reset()
    _, optimizer, step = make_step()
    plain = torch.compile(step)
    plain(*DATA[0])
    before = training_run.dynamo_compilations()
    optimizer.param_groups[0]["lr"] = 5e-3
    plain(*DATA[1])
    assert training_run.dynamo_compilations() > before


def test_resuming_with_another_compile_setting_is_refused():
    """A compiled run continued eagerly, or the reverse, would mix the two in one run: --resume refuses the change, and
    a run recorded before the flag existed was eager."""
    recorded = {"num_bins": 64, "cuda": False}
    assert training_run.changed_settings(recorded, {"num_bins": 64, "compile": True, "cuda": True}) == [
        "compile (False -> True)"
    ]
    assert training_run.changed_settings({**recorded, "compile": True}, {"num_bins": 64, "compile": False}) == [
        "compile (True -> False)"
    ]
    assert training_run.changed_settings(recorded, {"num_bins": 64, "compile": False}) == []


# One 512-step iteration and a 2-epoch update of 8 minibatches, then a second iteration with an annealed learning
# rate: the first rollout is identical with and without --compile (the same initial weights), so a difference after the
# first update (checkpoint.prev.pt, with a checkpoint every iteration) is the compiled update's
TWO_ITERATIONS = [
    "--env-id",
    "reach-v3",
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
    "--checkpoint-interval",
    "1",
    "--target-kl",
    "None",
]
MASKS_NOW = ["--mask-warmup-start", "0", "--mask-warmup-end", "1"]
ARMS = [
    ("ppo_vanilla.py", []),
    ("ppo_random_mask.py", MASKS_NOW),
    ("ppo_utility_mask.py", MASKS_NOW),
    ("ppo_loss_shaping.py", []),
    ("ppo_offpolicy_utility_mask.py", MASKS_NOW + ["--utility-updates-per-iteration", "16"]),
    ("ppo_vanilla.py", ["--action-head", "poisson"]),
]
# float32 sums in another order: the compiled update differs from the eager one in the last bits, and Adam divides by
# sqrt(v), so a gradient component near zero can take a visibly different step. The bound is 10x below one Adam step
# (lr 3e-4): a wrong update (a stale learning rate, a step taken twice or not at all) moves parameters by whole steps.
PARAM_ATOL, LOSS_RTOL = 3e-5, 1e-4


def checkpoint_tensors(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return {
        f"{name}.{k}": v
        for name, state in ckpt.items()
        if isinstance(state, dict)
        for k, v in state.items()
        if torch.is_tensor(v) and v.is_floating_point()
    }


@pytest.mark.parametrize("script,flags", ARMS, ids=[f"{s[4:-3]}{''.join(f[-1:])}" for s, f in ARMS])
def test_every_arm_compiles_once_and_its_update_matches_the_eager_one(tmp_path, script, flags):
    runs, outputs = {}, {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        result = run_script(script, tmp_path / name, *TWO_ITERATIONS, *flags, *extra)
        assert result.returncode == 0, result.stderr[-2000:]
        runs[name], outputs[name] = next((tmp_path / name).iterdir()), result
    steps = 2 if script == "ppo_offpolicy_utility_mask.py" else 1  # its utility critic has a gradient step of its own
    compiled_lines = [line for line in outputs["compiled"].stdout.splitlines() if line.startswith("compiled ")]
    assert len(compiled_lines) == steps and "compiled update_minibatch in " in compiled_lines[0], outputs[
        "compiled"
    ].stdout
    assert "compiled again" not in outputs["compiled"].stderr  # the annealed second iteration ran what was compiled
    assert "compiled " not in outputs["eager"].stdout
    eager, compiled = (checkpoint_tensors(runs[name] / "checkpoint.prev.pt") for name in ("eager", "compiled"))
    assert eager.keys() == compiled.keys() and eager
    worst = max((eager[k] - compiled[k]).abs().max().item() for k in eager)
    print(f"{script} {' '.join(flags)}: largest parameter difference {worst:.2e}")
    assert worst < PARAM_ATOL
    eager_row, compiled_row = (read_csv(runs[name] / "metrics.csv")[0] for name in ("eager", "compiled"))
    for column in ("policy_loss", "value_loss", "approx_kl", "utility_loss"):
        if column in eager_row and math.isfinite(float(eager_row[column])):
            assert float(compiled_row[column]) == pytest.approx(float(eager_row[column]), rel=LOSS_RTOL, abs=1e-7), (
                column
            )
    assert [row["learning_rate"] for row in read_csv(runs["compiled"] / "metrics.csv")] == ["0.0003", "0.00015"]
