"""Placements built to slip past the contract check are refused, each with its one-line reason.

The all-windows check (`validate_placements`) answers yes or no for every window at once and leaves naming
the offender to the per-window walk, so a placement it wrongly passed would be scored: a forged score.
Here each way of breaking the contract is tried on one window among many, on the widths and values where
index arithmetic could wrap or alias, and at random against a plain-loop statement of the contract; two
attacks also go through a real evaluation, from a hostile program in the sandbox.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluator.contract import validate_placements
from tests.evaluator_helpers import small_task, wrap_seed
from tests.test_batched_paths import EXPERTS, LAYERS, REPLICAS, random_placement

WINDOWS = 6


def _plans(seed: int, windows: int = WINDOWS) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [random_placement(rng, width=int(rng.choice([0, 0, REPLICAS]))) for _ in range(windows)]


def _check(placements, loads=None) -> str:
    loads = np.ones((len(placements), LAYERS, EXPERTS), dtype=np.int64) if loads is None else loads
    return validate_placements(placements, LAYERS, EXPERTS, REPLICAS, loads)


def _short_expert(placement) -> tuple[int, int]:
    """A (layer, expert) with fewer replicas than log2phy has room for: its padding lies inside the width."""
    _, log2phy, logcnt = placement
    layer, expert = np.argwhere(logcnt < log2phy.shape[2])[0]
    return int(layer), int(expert)


def _in_last(build) -> tuple[str, int]:
    """`build` applied to copies of the last window only; the check's answer and that window's index."""
    placements = _plans(7)
    placements[-1] = build(*(a.copy() for a in placements[-1]))
    return _check(placements), len(placements) - 1


def test_a_slot_listed_under_two_experts_is_refused() -> None:
    def build(p, l2p, c):
        layer = 0
        a = int(p[layer, 0])
        b = next(int(e) for e in p[layer] if e != a)
        l2p[layer, b, 0] = l2p[layer, a, 0]  # b lists a's slot; b's own first slot is listed by nobody
        return p, l2p, c
    problem, last = _in_last(build)
    assert problem.startswith(f"window {last}: inconsistent maps: log2phy[0, ")
    assert "but phy2log puts expert" in problem


def test_one_slot_listed_twice_by_its_expert_is_refused() -> None:
    def build(p, l2p, c):
        layer, expert = (int(i) for i in np.argwhere(c > 1)[0])
        l2p[layer, expert, 1] = l2p[layer, expert, 0]
        return p, l2p, c
    problem, last = _in_last(build)
    assert problem.startswith(f"window {last}: inconsistent maps: slot ")
    assert problem.endswith(("is listed 0 times in log2phy", "is listed 2 times in log2phy"))  # first in slot order


def test_padding_inside_the_listed_entries_is_refused() -> None:
    def build(p, l2p, c):
        layer, expert = (int(i) for i in np.argwhere(c > 1)[0])
        l2p[layer, expert, c[layer, expert] - 1] = -1
        return p, l2p, c
    problem, last = _in_last(build)
    assert problem.startswith(f"window {last}: id range: log2phy[")
    assert "= -1 is not a slot in [0, 24)" in problem


def test_a_valid_slot_after_the_padding_is_refused() -> None:
    def build(p, l2p, c):
        layer, expert = _short_expert((p, l2p, c))
        l2p[layer, expert, l2p.shape[2] - 1] = l2p[layer, expert, 0]  # a real slot of the same expert
        return p, l2p, c
    problem, last = _in_last(build)
    assert problem.startswith(f"window {last}: inconsistent maps: log2phy[")
    assert problem.endswith("past logcnt must be -1")


@pytest.mark.parametrize("value", [2**32, 2**32 + 3, 2**31 + 3, 2**15 + 3, -(2**32) + 3, -(2**63), 2**63 - 1])
def test_ids_that_alias_after_narrowing_are_refused(value: int) -> None:
    """Values whose low bits name a real slot or expert (an int32 or int16 view would accept them)."""
    def in_log2phy(p, l2p, c):
        l2p[1, 2, 0] = value
        return p, l2p, c

    def in_phy2log(p, l2p, c):
        p[1, 2] = value
        return p, l2p, c
    problem, last = _in_last(in_log2phy)
    assert problem == f"window {last}: id range: log2phy[1, 2, 0] = {value} is not a slot in [0, {REPLICAS})"
    problem, last = _in_last(in_phy2log)
    assert problem == f"window {last}: id range: phy2log[1, 2] = {value} is not an expert id in [0, {EXPERTS})"


def test_logcnt_whose_row_sum_wraps_to_r_is_refused() -> None:
    """Two counts near 2**63 make a row sum to R modulo 2**64: the sum rule passes, the count of slots does not."""
    def build(p, l2p, c):
        c[2, 0] = c[2, 1] = 2**63 - 1
        c[2, 2] = REPLICAS + 2 - (EXPERTS - 3)
        c[2, 3:] = 1
        assert int(c[2].sum()) == REPLICAS  # numpy's int64 sum wraps
        return p, l2p, c
    with np.errstate(over="ignore"):
        problem, last = _in_last(build)
    assert problem == (f"window {last}: inconsistent maps: logcnt[2, 0] = {2**63 - 1} but phy2log gives expert 0 "
                       f"{int((_plans(7)[-1][0][2] == 0).sum())} slots")


def test_a_loaded_expert_dropped_with_consistent_maps_is_refused() -> None:
    """Expert 0 of layer 3 gives its slots to expert 1 and every map agrees: only the zero count is wrong."""
    def build(p, l2p, c):
        layer = 3
        p[layer][p[layer] == 0] = 1
        c[layer, 1] += c[layer, 0]
        c[layer, 0] = 0
        slots = np.flatnonzero(p[layer] == 1)
        width = max(l2p.shape[2], slots.size)
        l2p = np.concatenate([l2p, np.full((LAYERS, EXPERTS, width - l2p.shape[2]), -1)], axis=2)
        l2p[layer, 0] = -1
        l2p[layer, 1, :slots.size] = slots
        return p, l2p, c
    placements = _plans(7)
    placements[-1] = build(*(a.copy() for a in placements[-1]))
    loads = np.full((WINDOWS, LAYERS, EXPERTS), 5, dtype=np.int64)
    problem = _check(placements, loads)
    assert problem == (f"window {WINDOWS - 1}: zero replicas: expert 0 in layer 3 has logcnt 0 though it carries 5 "
                       "tokens")


def test_every_window_is_looked_at_whatever_its_width() -> None:
    """Windows as wide as their widest expert or as R, all valid but one, broken past its padding; the broken
    one is moved through every position."""
    for broken in range(WINDOWS):
        placements = _plans(11)
        p, l2p, c = (a.copy() for a in placements[broken])
        layer, expert = _short_expert((p, l2p, c)) if l2p.shape[2] > c.max() else (None, None)
        if layer is None:  # no room inside this width: widen by one column of padding first
            l2p = np.concatenate([l2p, np.full((LAYERS, EXPERTS, 1), -1)], axis=2)
            layer, expert = _short_expert((p, l2p, c))
        l2p[layer, expert, c[layer, expert]] = l2p[layer, expert, 0]
        placements[broken] = (p, l2p, c)
        assert _check(placements).startswith(f"window {broken}: inconsistent maps: log2phy[")


class _HidesItsJunk(np.ndarray):
    """An array whose `!= scalar` does not report negative values, as an object from anywhere might."""

    def __ne__(self, other):
        if np.isscalar(other):
            return np.asarray(self) > -1
        return super().__ne__(other)


def test_array_subclasses_are_refused_not_trusted() -> None:
    """The check reads its arrays through their methods: only plain numpy arrays are taken at their word."""
    p, l2p, c = _plans(3, 1)[0]
    junk = np.concatenate([l2p, np.full((LAYERS, EXPERTS, 1), -1)], axis=2)
    junk[0, 0, -1] = -5  # padding that is not -1
    problem = _check([(p, junk.view(_HidesItsJunk), c)])
    assert problem == "window 0: output types: log2phy must be an integer tensor, got _HidesItsJunk"
    masked = np.ma.masked_array(junk, mask=junk == -5)
    assert _check([(p, masked, c)]) == "window 0: output types: log2phy must be an integer tensor, got MaskedArray"


def _obeys(p: np.ndarray, l2p: np.ndarray, c: np.ndarray) -> bool:
    """The contract as a plain loop, rule by rule, for the random trials below."""
    if any(type(a) is not np.ndarray or a.dtype != np.int64 for a in (p, l2p, c)):
        return False
    if p.shape != (LAYERS, REPLICAS) or c.shape != (LAYERS, EXPERTS) or l2p.shape[:2] != (LAYERS, EXPERTS):
        return False
    for layer in range(LAYERS):
        if sum(int(n) for n in c[layer]) != REPLICAS:
            return False
        for expert in range(EXPERTS):
            count = int(c[layer, expert])
            slots = [s for s in range(REPLICAS) if p[layer, s] == expert]
            row = [int(v) for v in l2p[layer, expert]]
            if count < 1 or count != len(slots) or count > len(row):
                return False
            if sorted(row[:count]) != slots or any(v != -1 for v in row[count:]):
                return False
    return all(0 <= v < EXPERTS for v in p.ravel().tolist())


_VALUES = [-1, -2, 0, 1, EXPERTS - 1, EXPERTS, REPLICAS - 1, REPLICAS, 2**15, 2**31, 2**32, 2**32 + 1, -(2**32),
           2**63 - 1, -(2**63)]


def _mutate(rng: np.random.Generator, placement):
    p, l2p, c = (a.copy() for a in placement)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(7))
        array = (p, l2p, c)[kind % 3]
        at = tuple(int(rng.integers(n)) for n in array.shape)
        if kind < 3:
            array[at] = rng.choice(_VALUES)
        elif kind < 6:
            other = tuple(int(rng.integers(n)) for n in array.shape)
            array[at], array[other] = array[other], array[at]
        else:  # a count moved between experts: rows still sum to R
            layer, a, b = int(rng.integers(LAYERS)), *rng.choice(EXPERTS, 2, replace=False)
            c[layer, a] += 1
            c[layer, b] -= 1
    return p, l2p, c


@pytest.mark.parametrize("seed", range(3))
def test_random_breakage_is_judged_as_the_plain_loop_judges_it(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    refused = 0
    for _ in range(150):
        windows = int(rng.integers(1, 5))
        placements = [random_placement(rng, width=int(rng.choice([0, 0, REPLICAS]))) for _ in range(windows)]
        for w in range(windows):
            if rng.random() < 0.4:
                placements[w] = _mutate(rng, placements[w])
        expected = all(_obeys(*p) for p in placements)
        with np.errstate(over="ignore"):
            problem = _check(placements)
        assert (problem == "") == expected, problem
        refused += not expected
    assert refused > 50  # the trials did break placements


def test_hostile_programs_are_refused_by_a_real_evaluation(tmp_path: Path) -> None:
    """Windows before the last are valid; the last alone is broken, inside log2phy's width (so it is not
    refused on arrival, where only padding past the widest expert is looked at)."""
    task = small_task(tmp_path, timeout_s=20.0)
    last = len(task.plan_windows) - 1
    assert last >= 1
    calls = f"CALLS[0] += 1\nif CALLS[0] == {last + 2}:  # the warm-up call comes first\n"
    past_padding = wrap_seed(
        calls + "    l = l.clone()\n"
                "    e = int((c[0] < c[0].max()).nonzero()[0])\n"
                "    l[0, e, c[0, e]] = l[0, e, 0]\n"
    ).replace("_seed_rebalance = rebalance_experts", "_seed_rebalance = rebalance_experts\nCALLS = [0]")
    result = task.evaluate(past_padding)
    assert not result.correct
    assert result.error.startswith(f"window {last}: inconsistent maps: log2phy[0, ")
    assert result.error.endswith("past logcnt must be -1")
    shared_slot = wrap_seed(
        calls + "    l = l.clone()\n"
                "    a = int(p[0, 0])\n"
                "    b = next(int(e) for e in p[0] if int(e) != a)\n"
                "    l[0, b, 0] = l[0, a, 0]\n"
    ).replace("_seed_rebalance = rebalance_experts", "_seed_rebalance = rebalance_experts\nCALLS = [0]")
    result = task.evaluate(shared_slot)
    assert not result.correct
    assert result.error.startswith(f"window {last}: inconsistent maps: log2phy[0, ")
    assert "but phy2log puts expert" in result.error
    assert "\n" not in result.error
