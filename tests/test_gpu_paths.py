"""CUDA paths give CPU's numbers: the simulation within float tolerance, trace generation exactly.

Skipped where torch sees no CUDA device (CI, and most development machines); run on a GPU machine with
`python -m pytest tests/test_gpu_paths.py -q`.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evaluator.simulate import simulate
from evaluator.traces import generator
from tests.evaluator_helpers import SEED_CODE, SMALL, skewed_trace, small_task

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device (no GPU here)")
torch.set_num_threads(1)


def seed_placements(load: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed balancer's (phy2log, logcnt) for each window, computed on CPU in this process."""
    namespace: dict = {}
    exec(compile(SEED_CODE, "seed", "exec"), namespace)
    args = (SMALL["num_replicas"], SMALL["num_groups"], SMALL["num_nodes"], SMALL["num_gpus"])
    plans = [namespace["rebalance_experts"](window.long(), *args) for window in load]  # int64, as the contract says
    return torch.stack([p[0] for p in plans]), torch.stack([p[2] for p in plans])


def test_simulation_on_cuda_matches_cpu():
    load = skewed_trace(steps=400).windows(100)
    phy2log, logcnt = seed_placements(load)
    cpu = simulate(load, phy2log, logcnt, SMALL["num_gpus"], SMALL["num_nodes"])
    gpu = simulate(load.cuda(), phy2log.cuda(), logcnt.cuda(), SMALL["num_gpus"], SMALL["num_nodes"])
    for name in ("balancedness_gpu", "balancedness_expert", "balancedness_node", "layer_time", "identity_time",
                 "gpu_load"):
        torch.testing.assert_close(getattr(gpu, name).cpu(), getattr(cpu, name), rtol=1e-12, atol=1e-9, msg=name)
    assert gpu.speedup == pytest.approx(cpu.speedup, rel=1e-12)


@pytest.mark.parametrize("preset", ["deepseek-v2-lite", "deepseek-v3"])  # plain top-k and group-limited routing
def test_trace_generation_on_cuda_gives_the_same_trace(preset: str):
    params = generator.TraceParams(steps=120)
    cpu = generator.generate(preset, params, device="cpu", progress=False)
    gpu = generator.generate(preset, params, device="cuda", progress=False)
    assert gpu.sha256 == cpu.sha256  # integer routing: not merely close, the same counts


def test_evaluation_on_cuda_scores_like_cpu(tmp_path: Path):
    cpu = small_task(tmp_path).evaluate(SEED_CODE)
    gpu = small_task(tmp_path, device="cuda").evaluate(SEED_CODE)
    assert cpu.correct and gpu.correct, gpu.error
    # the balancer itself runs on the GPU here; equal plans give equal metrics, and a sort that breaks a tie
    # differently on the GPU may move a replica, so the bound is loose compared with the simulation's
    for name in ("balancedness_gpu", "balancedness_expert", "balancedness_node"):
        assert gpu.metrics[name] == pytest.approx(cpu.metrics[name], abs=1e-3), name
