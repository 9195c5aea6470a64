"""The hybrid-tail balancer family: contract, exactness of its replication, and what each refinement buys."""
from __future__ import annotations

import ast
import importlib.util
from types import ModuleType

import numpy as np
import pytest
import torch

from evaluator.contract import validate_placement
from tests.evaluator_helpers import REPO, skewed_trace, small_task

FAMILY = ["hybrid_tail", "hybrid_tail_fixup", "hybrid_tail_swap"]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"family_{name}", REPO / "candidates" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sequential_counts(weight: torch.Tensor, num_replicas: int, tail: int) -> torch.Tensor:
    """One replica at a time: min-max priority w / c for the bulk, Sainte-Lague w / (c - 1/2) for the tail."""
    num_layers, num_experts = weight.shape
    counts = torch.ones(num_layers, num_experts, dtype=torch.int64)
    extra = num_replicas - num_experts
    for i in range(extra):
        shift = 0.5 if i >= extra - tail else 0.0
        hottest = (weight / (counts - shift)).argmax(-1)
        counts[torch.arange(num_layers), hottest] += 1
    return counts


def gpu_peaks(weight: torch.Tensor, phy2log: torch.Tensor, counts: torch.Tensor, num_gpus: int) -> torch.Tensor:
    slot = (weight / counts).gather(-1, phy2log)
    return slot.view(weight.size(0), num_gpus, -1).sum(-1).amax(-1)


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("shape", [(58, 256, 288, 8, 4, 32), (6, 16, 24, 4, 2, 8), (3, 16, 16, 1, 1, 4),
                                   (4, 12, 60, 3, 2, 6), (3, 64, 64, 1, 1, 8), (2, 5, 8, 1, 1, 8)])
def test_family_obeys_the_contract(name: str, shape: tuple[int, ...]) -> None:
    layers, experts, replicas, groups, nodes, gpus = shape
    weight = torch.from_numpy(np.random.default_rng(3).poisson(5.0, size=(layers, experts)))
    weight[0, :3] = 0  # experts without load still get a slot
    if layers > 1:
        weight[1] = 0  # an idle layer
    p, lp, c = (t.numpy() for t in load(name).rebalance_experts(weight, replicas, groups, nodes, gpus))
    assert validate_placement(p, lp, c, layers, experts, replicas, load=weight.numpy()) == ""


@pytest.mark.parametrize("seed", range(6))
def test_hybrid_counts_equal_the_one_at_a_time_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    experts = int(rng.integers(4, 40))
    replicas = experts + int(rng.integers(1, 3 * experts))
    weight = torch.from_numpy(rng.gamma(0.4, 100.0, size=(5, experts)))  # continuous: no ties
    module = load("hybrid_tail")
    tails = module.tail_lengths(replicas - experts)
    fast = module.hybrid_counts(weight, replicas, tails)
    for k, tail in enumerate(tails):
        assert torch.equal(fast[:, k], sequential_counts(weight, replicas, tail)), f"tail {tail}"


def test_tail_lengths_always_include_the_pure_min_max_rule() -> None:
    module = load("hybrid_tail")
    assert module.tail_lengths(32) == [0, 2, 4, 7]
    assert module.tail_lengths(0) == [0]
    assert module.tail_lengths(1) == [0, 1]


def test_fix_up_lowers_the_peak_and_keeps_the_counts_valid() -> None:
    module = load("hybrid_tail_fixup")
    weight = torch.tensor([[100.0, 60.0, 10.0, 8.0], [50.0, 50.0, 50.0, 50.0]], dtype=torch.float64)
    counts = torch.tensor([[1, 2, 3, 2], [2, 2, 2, 2]])  # row 0: the hottest expert starved, cold ones padded
    fixed = module.fix_up_counts(weight, counts, rounds=3)
    peak_before = (weight / counts).amax(-1)
    peak_after = (weight / fixed).amax(-1)
    assert peak_after[0] < peak_before[0]  # replicas flowed to the hot expert
    assert torch.equal(fixed[1], counts[1])  # nothing to gain: unchanged
    assert torch.equal(fixed.sum(-1), counts.sum(-1)) and bool((fixed >= 1).all())


def test_fix_up_never_raises_the_peak() -> None:
    module = load("hybrid_tail_fixup")
    rng = np.random.default_rng(7)
    weight = torch.from_numpy(rng.gamma(0.5, 50.0, size=(20, 12)))
    counts = torch.from_numpy(rng.multinomial(12, np.ones(12) / 12, size=20)) + 1
    fixed = module.fix_up_counts(weight, counts, rounds=4)
    assert bool(((weight / fixed).amax(-1) <= (weight / counts).amax(-1) + 1e-12).all())
    assert torch.equal(fixed.sum(-1), counts.sum(-1)) and bool((fixed >= 1).all())


def test_swaps_reach_the_best_split_and_keep_every_item() -> None:
    module = load("hybrid_tail_swap")
    load_ = torch.tensor([[9.0, 6.0, 5.0, 4.0]], dtype=torch.float64)  # two GPUs of two slots; best split {9,4} {6,5}
    _, gpu_load = module.snake_pack(load_, 2)
    assert gpu_load.tolist() == [[13.0, 11.0]]  # snake: 9 + 4 and 6 + 5
    unbalanced = torch.tensor([[0, 1, 2, 3]])  # {9, 6} {5, 4}: loads 15 and 9
    refined = module.refine_by_swaps(load_.gather(-1, unbalanced), unbalanced, 2, rounds=4)
    assert load_.gather(-1, refined).view(2, 2).sum(-1).amax().item() == 13.0
    assert sorted(refined.flatten().tolist()) == [0, 1, 2, 3]


def test_each_refinement_never_plans_a_hotter_gpu() -> None:
    """Per layer on the planning window: hybrid_tail <= greedy_snake (tail 0 is a choice), swap <= fix-up."""
    trace = skewed_trace(steps=200, layers=6, experts=32, seed=4)
    weight = torch.from_numpy(trace.counts.sum(0)).double()
    replicas, gpus = 48, 8
    peaks = {}
    for name in ["greedy_snake", *FAMILY]:
        p, _, c = load(name).rebalance_experts(weight, replicas, 4, 2, gpus)
        peaks[name] = gpu_peaks(weight, p, c, gpus)
    assert bool((peaks["hybrid_tail"] <= peaks["greedy_snake"] + 1e-9).all())
    assert bool((peaks["hybrid_tail_swap"] <= peaks["hybrid_tail_fixup"] + 1e-9).all())
    assert bool((peaks["hybrid_tail_swap"] < peaks["hybrid_tail_fixup"] - 1e-9).any())  # swaps do help somewhere


@pytest.mark.parametrize("name", FAMILY)
def test_family_files_are_standalone_programs_with_evolve_blocks(name: str) -> None:
    text = (REPO / "candidates" / f"{name}.py").read_text()
    starts = [line for line in text.splitlines() if line.startswith("# EVOLVE-BLOCK-START")]
    ends = [line for line in text.splitlines() if line.startswith("# EVOLVE-BLOCK-END")]
    assert len(starts) == len(ends) >= 3
    imports = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            imports |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imports.add((node.module or "").split(".")[0])
    assert imports <= {"torch", "math", "__future__"}


def test_family_scores_through_the_evaluator(tmp_path) -> None:
    task = small_task(tmp_path, protocol="in-sample")
    for name in FAMILY:
        result = task.evaluate((REPO / "candidates" / f"{name}.py").read_text())
        assert result.correct, (name, result.error)
        assert 0.5 < result.metrics["balancedness_gpu"] <= 1.0
