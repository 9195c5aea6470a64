"""The all-windows-at-once paths of the evaluator give exactly the per-window results.

The contract check, simulation, migration model and locality measure every scored window in one pass;
each is compared here with the same figure computed window by window (or with a plain loop), on random
valid placements and on placements broken in every way the contract names.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluator.contract import validate_each, validate_placement, validate_placements
from evaluator.locality import RouteSamples, assign_windows, measure, node_masks
from evaluator.migration import MigrationModel, migration_cost
from evaluator.simulate import identity_gpu_load, simulate

LAYERS, EXPERTS, REPLICAS, GPUS, NODES = 5, 16, 24, 8, 4


def random_placement(rng: np.random.Generator, width: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A valid placement: every expert at least once, extra replicas at random, slots shuffled, each
    expert's slots listed in random order and padded with -1 to `width` (0: the widest expert)."""
    logcnt = 1 + rng.multinomial(REPLICAS - EXPERTS, np.ones(EXPERTS) / EXPERTS, size=LAYERS)
    width = width or int(logcnt.max())
    phy2log = np.stack([rng.permutation(np.repeat(np.arange(EXPERTS), row)) for row in logcnt])
    log2phy = np.full((LAYERS, EXPERTS, width), -1, dtype=np.int64)
    for layer in range(LAYERS):
        for expert in range(EXPERTS):
            slots = rng.permutation(np.flatnonzero(phy2log[layer] == expert))
            log2phy[layer, expert, :slots.size] = slots
    return phy2log.astype(np.int64), log2phy, logcnt.astype(np.int64)


def _listed_slot(rng, p, l2p, c):
    layer, expert = int(rng.integers(LAYERS)), int(rng.integers(EXPERTS))
    return layer, expert, int(rng.integers(c[layer, expert]))


def break_one(rng: np.random.Generator, placement, kind: str):
    """The placement broken by one rule (copies; the input is left alone)."""
    p, l2p, c = (a.copy() for a in placement)
    layer, slot = int(rng.integers(LAYERS)), int(rng.integers(REPLICAS))
    if kind == "phy2log range":
        p[layer, slot] = rng.choice([-1, EXPERTS, 10**12])
    elif kind == "phy2log moved":  # one slot given another expert: phy2log no longer counts what logcnt says
        p[layer, slot] = (p[layer, slot] + 1 + int(rng.integers(EXPERTS - 1))) % EXPERTS
    elif kind == "zero replicas":
        c[layer, int(rng.integers(EXPERTS))] = 0
    elif kind == "row sum":
        c[layer, int(rng.integers(EXPERTS))] += 1
    elif kind == "phy2log swap":  # counts still agree, the maps do not
        other = int(np.flatnonzero(p[layer] != p[layer, slot])[0])
        p[layer, [slot, other]] = p[layer, [other, slot]]
    elif kind == "padding set":
        layer, expert = int(rng.integers(LAYERS)), int(np.argmin(c[layer]))
        if c[layer, expert] >= l2p.shape[2]:
            l2p = np.concatenate([l2p, np.full((LAYERS, EXPERTS, 1), -1)], axis=2)
        l2p[layer, expert, l2p.shape[2] - 1] = int(rng.integers(REPLICAS))
    elif kind == "listed range":
        layer, expert, j = _listed_slot(rng, p, l2p, c)
        l2p[layer, expert, j] = rng.choice([-1, -7, REPLICAS, 2**62])
    elif kind == "listed twice":
        layer = int(np.argmax((c > 1).any(axis=1)))
        expert = int(np.argmax(c[layer] > 1))
        l2p[layer, expert, 1] = l2p[layer, expert, 0]
    elif kind == "listed by another":
        layer = int(rng.integers(LAYERS))
        a, b = rng.choice(EXPERTS, 2, replace=False)
        l2p[layer, a, 0], l2p[layer, b, 0] = l2p[layer, b, 0], l2p[layer, a, 0]
    elif kind == "too narrow":
        l2p = l2p[:, :, : max(int(c.max()) - 1, 1)].copy()
    elif kind == "dtype":
        c = c.astype(np.int32)
    elif kind == "shape":
        p = p[:, :-1].copy()
    elif kind == "nan":
        l2p = l2p.astype(np.float64)
        l2p[0, 0, 0] = np.nan
    return p, l2p, c


KINDS = ["phy2log range", "phy2log moved", "zero replicas", "row sum", "phy2log swap", "padding set", "listed range",
         "listed twice", "listed by another", "too narrow", "dtype", "shape", "nan"]


@pytest.mark.parametrize("seed", range(6))
def test_contract_batched_agrees_with_each_window_on_valid_plans(seed: int) -> None:
    rng = np.random.default_rng(seed)
    windows = int(rng.integers(1, 6))
    placements = [random_placement(rng, width=int(rng.choice([0, 0, 9]))) for _ in range(windows)]
    loads = rng.integers(0, 100, size=(windows, LAYERS, EXPERTS))
    assert validate_each(placements, LAYERS, EXPERTS, REPLICAS, loads) == ""
    assert validate_placements(placements, LAYERS, EXPERTS, REPLICAS, loads) == ""


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_contract_batched_names_the_same_first_offender(kind: str, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    windows = 4
    placements = [random_placement(rng) for _ in range(windows)]
    loads = rng.integers(0, 100, size=(windows, LAYERS, EXPERTS))
    broken = sorted(rng.choice(windows, int(rng.integers(1, 3)), replace=False))
    for w in broken:
        placements[w] = break_one(rng, placements[w], kind)
    expected = validate_each(placements, LAYERS, EXPERTS, REPLICAS, loads)
    first = int(broken[0])
    assert expected.startswith(f"window {first}: ")
    assert expected == f"window {first}: " + validate_placement(*placements[first], LAYERS, EXPERTS, REPLICAS,
                                                                 loads[first])
    assert validate_placements(placements, LAYERS, EXPERTS, REPLICAS, loads) == expected
    stacked = None
    if kind not in ("shape",):
        stacked = (np.stack([p[0] for p in placements]), np.stack([p[2] for p in placements]))
        assert validate_placements(placements, LAYERS, EXPERTS, REPLICAS, loads, stacked=stacked) == expected


def _random_plans(seed: int, windows: int):
    rng = np.random.default_rng(seed)
    placements = [random_placement(rng) for _ in range(windows)]
    if windows > 2:  # a window that repeats its predecessor: nothing moves
        placements[2] = placements[1]
    loads = torch.from_numpy(rng.integers(0, 1000, size=(windows, LAYERS, EXPERTS)))
    return placements, loads


@pytest.mark.parametrize("seed", range(4))
def test_simulation_of_all_windows_equals_each_window(seed: int) -> None:
    placements, loads = _random_plans(seed, 5)
    plans = torch.from_numpy(np.stack([p[0] for p in placements]))
    counts = torch.from_numpy(np.stack([p[2] for p in placements]))
    identity = identity_gpu_load(loads.double(), GPUS).amax(-1).sum(-1)
    together = simulate(loads.double(), plans, counts, GPUS, NODES, identity_time=identity)
    assert torch.equal(together.identity_time, simulate(loads, plans, counts, GPUS, NODES).identity_time)
    for w in range(5):
        alone = simulate(loads[w:w + 1], plans[w:w + 1], counts[w:w + 1], GPUS, NODES)
        for name in ("balancedness_gpu", "balancedness_expert", "balancedness_node", "layer_time", "identity_time",
                     "mean_time"):
            assert torch.equal(getattr(together, name)[w:w + 1], getattr(alone, name)), name
        assert torch.equal(together.mean_time[w], together.gpu_load[w].mean(-1).sum())


def _migration_loop(plans: np.ndarray, num_gpus: int) -> tuple[list[int], list[int], list[list[int]]]:
    """Changed slots, remote slots and remote slots per GPU of each window, by plain Python loops."""
    per_gpu = plans.shape[2] // num_gpus
    changed, remote, per = [0], [0], [[0] * num_gpus]
    for w in range(1, plans.shape[0]):
        c = r = 0
        gpus = [0] * num_gpus
        for layer in range(plans.shape[1]):
            for slot in range(plans.shape[2]):
                new, gpu = plans[w, layer, slot], slot // per_gpu
                if new != plans[w - 1, layer, slot]:
                    c += 1
                    if new not in set(plans[w - 1, layer, gpu * per_gpu:(gpu + 1) * per_gpu].tolist()):
                        r += 1
                        gpus[gpu] += 1
        changed.append(c)
        remote.append(r)
        per.append(gpus)
    return changed, remote, per


@pytest.mark.parametrize("seed", range(4))
def test_migration_of_all_windows_equals_a_loop(seed: int) -> None:
    placements, loads = _random_plans(seed, 5)
    plans = np.stack([p[0] for p in placements])
    sim = simulate(loads, torch.from_numpy(plans), torch.from_numpy(np.stack([p[2] for p in placements])), GPUS,
                   NODES)
    model = MigrationModel()
    moves = migration_cost(plans, sim, GPUS, 100, model)
    changed, remote, per = _migration_loop(plans, GPUS)
    assert moves.slots_changed.tolist() == changed
    assert moves.slots_remote.tolist() == remote
    assert moves.gpu_bytes_max.tolist() == [max(g) * model.expert_bytes for g in per]
    assert moves.bytes_moved.tolist() == [sum(g) * model.expert_bytes for g in per]
    wide = migration_cost(plans + (1 << 15), sim, GPUS, 100, model)  # ids too large for the narrow path
    assert wide.slots_changed.tolist() == changed and wide.slots_remote.tolist() == remote


def test_node_masks_equal_a_loop() -> None:
    rng = np.random.default_rng(7)
    plans = np.stack([random_placement(rng)[0] for _ in range(3)])
    for nodes in (1, 2, 4, 8):
        masks = node_masks(plans, nodes, EXPERTS)
        per_node = REPLICAS // nodes
        for w in range(3):
            for layer in range(LAYERS):
                expected = [0] * EXPERTS
                for slot, expert in enumerate(plans[w, layer]):
                    expected[expert] |= 1 << (slot // per_node)
                assert masks[w, layer].tolist() == expected


@pytest.mark.parametrize("nodes", [2, 4, 8])
def test_locality_of_all_windows_equals_each_window(nodes: int) -> None:
    rng = np.random.default_rng(nodes)
    windows, window, top_k = 4, 10, 3
    plans = np.stack([random_placement(rng)[0] for _ in range(windows)])
    steps = np.sort(rng.integers(window, (windows + 1) * window, size=60))
    routes = np.stack([[rng.choice(EXPERTS, top_k, replace=False) for _ in range(LAYERS)] for _ in steps])
    samples = RouteSamples(routes.astype(np.int16), steps.astype(np.int64))
    total = (windows + 1) * window
    together = measure(plans, assign_windows(samples, window, 1, windows, total, EXPERTS), nodes, EXPERTS)
    for w in range(windows):
        tokens = assign_windows(samples, window, 1 + w, 1, total, EXPERTS)
        alone = measure(plans[w:w + 1], tokens, nodes, EXPERTS)
        for name in ("tokens", "token_layers", "spanned", "multi"):
            assert getattr(together, name)[w] == getattr(alone, name)[0], name


def test_runtime_figures_equal_numpys_median_and_percentiles() -> None:
    """The call-time figures are computed on plain floats; they must be numpy's, bit for bit."""
    from evaluator.task import _median, _quantile

    rng = np.random.default_rng(7)
    for count in (1, 2, 3, 11, 12, 40):
        for _ in range(100):
            times = rng.random(count) * 0.02
            ordered = sorted(times.tolist())
            assert _median(ordered) == float(np.median(times))
            for q in (0.1, 0.9):
                assert _quantile(ordered, q) == float(np.percentile(times, q * 100))
