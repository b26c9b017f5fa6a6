"""--cuda: the update captured as one CUDA graph (training_run.MinibatchStep) computes what the CPU update computes.
Skipped without an NVIDIA GPU (CI has none); run on the device with `pytest tests/test_cuda.py -s` (docs/speed.md)."""

import math

import pytest
import torch
import torch.nn as nn

from conftest import read_csv, run_script
from training_run import MinibatchStep

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# One PPO iteration of 512 steps and a 2-epoch update of 8 minibatches: the first rollout is identical on both
# paths (the rollout runs on the CPU, from the same initial weights), so any difference is the update's
ONE_UPDATE = [
    "--env-id",
    "reach-v3",
    "--num-steps",
    "512",
    "--total-timesteps",
    "512",
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
    ("ppo_utility_mask.py", MASKS_NOW + ["--mask-mode", "hard", "--credit", "broadcast"]),
    ("ppo_loss_shaping.py", []),
    ("ppo_offpolicy_utility_mask.py", MASKS_NOW + ["--utility-updates-per-iteration", "16"]),
    ("ppo_vanilla.py", ["--action-head", "poisson"]),
    ("ppo_vanilla.py", ["--action-head", "ordinal"]),
]
# float32 kernels differ between CPU and GPU in their last bits, and Adam divides by sqrt(v): a gradient component
# near zero can take a visibly different step. The bounds stay 10x below one Adam step (lr 3e-4): a wrong update
# (a stale input buffer, a lost learning rate, the warm-up's steps left in) moves parameters by whole steps.
PARAM_ATOL, LOSS_RTOL = 3e-5, 1e-4


def checkpoint_tensors(run_dir):
    ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    return {
        f"{name}.{k}": v
        for name, state in ckpt.items()
        if isinstance(state, dict)
        for k, v in state.items()
        if torch.is_tensor(v) and v.is_floating_point()
    }


@pytest.mark.parametrize("script,flags", ARMS, ids=[f"{s[4:-3]}{''.join(f[-1:])}" for s, f in ARMS])
def test_cuda_graph_update_matches_the_cpu_update(tmp_path, script, flags):
    runs = {}
    for path, extra in (("cpu", []), ("cuda", ["--cuda"])):
        result = run_script(script, tmp_path / path, *ONE_UPDATE, *flags, *extra)
        assert result.returncode == 0, result.stderr[-2000:]
        runs[path] = next((tmp_path / path).iterdir())
    cpu, cuda = (checkpoint_tensors(runs[p]) for p in ("cpu", "cuda"))
    assert cpu.keys() == cuda.keys() and cpu
    worst = max((cpu[k] - cuda[k]).abs().max().item() for k in cpu)
    print(f"{script} {' '.join(flags)}: largest parameter difference {worst:.2e}")
    assert worst < PARAM_ATOL
    cpu_row, cuda_row = (read_csv(runs[p] / "metrics.csv")[0] for p in ("cpu", "cuda"))
    for column in ("policy_loss", "value_loss", "approx_kl", "utility_loss"):
        if column in cpu_row and math.isfinite(float(cpu_row[column])):
            assert float(cuda_row[column]) == pytest.approx(float(cpu_row[column]), rel=LOSS_RTOL, abs=1e-7), column


def test_replaying_the_graph_takes_the_eager_steps():
    """The capture's warm-up steps leave no trace (parameters and Adam's moments are put back), and a learning rate
    set as a number between steps reaches the graph: 20 replayed steps equal 20 eager ones on the same GPU."""

    def make():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3)).cuda()
        return net, torch.optim.Adam(net.parameters(), lr=1e-2, eps=1e-5, fused=True)

    data = [(torch.randn(16, 8, device="cuda"), torch.randn(16, 3, device="cuda")) for _ in range(20)]
    results = []
    for graphed in (False, True):
        net, optimizer = make()

        def step(x, y):
            loss = ((net(x) - y) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 0.5, foreach=True)
            optimizer.step()
            return (loss.detach(),)

        run_step = MinibatchStep(step, optimizer, device=torch.device("cuda")) if graphed else step
        losses = []
        for i, (x, y) in enumerate(data):
            optimizer.param_groups[0]["lr"] = 1e-2 * (1 - i / 20)  # annealed, as the arms do
            losses.append(run_step(x, y)[0].item())
        results.append((losses, [p.detach().clone() for p in net.parameters()], optimizer.state_dict()))
    (eager_losses, eager_params, eager_state), (graph_losses, graph_params, graph_state) = results
    assert graph_losses == pytest.approx(eager_losses, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(eager_params, graph_params))
    assert float(graph_state["state"][0]["step"]) == 20  # the warm-up's steps were not counted
    assert isinstance(graph_state["param_groups"][0]["lr"], float)  # checkpoints keep a number
