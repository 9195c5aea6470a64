"""The balancer contract, checked on what a candidate returned.

`rebalance_experts(weight[L, E], num_replicas, num_groups, num_nodes, num_gpus)` must return
`phy2log [L, R]`, `log2phy [L, E, X]`, `logcnt [L, E]`, all int64, with every expert on at least one
slot, each `logcnt` row summing to R, and `log2phy` listing exactly the slots `phy2log` gives each expert
(padded with -1). Every check is vectorised, over all windows at once; the first failure comes back as
one line naming the window, the rule and the first offending (layer, expert) or (layer, slot).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def validate_placements(
    placements: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    num_layers: int,
    num_experts: int,
    num_replicas: int,
    loads: np.ndarray,
    stacked: tuple[np.ndarray, np.ndarray] | None = None,
) -> str:
    """Check one placement per window; "" when all obey the contract, else "window i: <rule>" for the first
    window that breaks a rule, naming what `validate_placement` names for it.

    All windows are checked at once (`_all_hold`); only when some rule fails are the windows walked one by
    one, to name the first offender. `stacked` may carry `(phy2log [W, L, R], logcnt [W, L, E])` already stacked."""
    if not placements:
        return ""
    if not any(_check_form(*p, num_layers, num_experts, num_replicas) for p in placements):
        if stacked is None:
            stacked = (np.stack([p[0] for p in placements]), np.stack([p[2] for p in placements]))
        if _all_hold(stacked[0], [p[1] for p in placements], stacked[1], num_experts, num_replicas):
            return ""
    return validate_each(placements, num_layers, num_experts, num_replicas, loads)


def validate_each(
    placements: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    num_layers: int,
    num_experts: int,
    num_replicas: int,
    loads: np.ndarray,
) -> str:
    """The per-window walk: the first window's first broken rule (the failure path of validate_placements)."""
    for i, (phy2log, log2phy, logcnt) in enumerate(placements):
        problem = validate_placement(phy2log, log2phy, logcnt, num_layers, num_experts, num_replicas, loads[i])
        if problem:
            return f"window {i}: {problem}"
    return ""


def _all_hold(phy2log: np.ndarray, log2phys: list[np.ndarray], logcnt: np.ndarray, num_experts: int,
              num_replicas: int) -> bool:
    """Whether every window obeys every rule, for well-formed `phy2log [W, L, R]`, `logcnt [W, L, E]` and
    one `log2phy [L, E, X_w]` per window: the rules of `validate_placement`, answered yes or no (naming
    the offender is left to the per-window walk).

    The rules on phy2log and logcnt alone are one reduction each over all windows. log2phy is read window
    by window: it is most of the bytes (1 MB a window on the standard shape), the windows' widths may
    differ, and one window's listed entries, gathered, stay in cache for the checks that follow (stacking
    every window's index arrays instead was slower: they leave the cache). The index arithmetic works in
    place, on one temporary per window."""
    num_windows, num_layers, _ = phy2log.shape
    if phy2log.min() < 0 or phy2log.max() >= num_experts:
        return False
    if logcnt.min() < 1 or (logcnt.sum(axis=2) != num_replicas).any():
        return False
    index = _indices(num_layers, num_experts, num_replicas)
    listed_count = num_layers * num_replicas  # the rows of logcnt sum to R
    flat_counts = logcnt.reshape(num_windows, -1)
    firsts = np.cumsum(flat_counts, axis=1)  # each expert's first listed entry, for all windows at once
    firsts -= flat_counts
    seen = np.empty(listed_count, dtype=np.int64)
    for w, log2phy in enumerate(log2phys):
        width = log2phy.shape[2]
        counts = flat_counts[w]
        if width < counts.max():
            return False
        # One pass over the padded array: exactly L*R entries differ from -1. The L*R listed entries are
        # checked to lie in [0, R) below, so they are those entries, and everything past logcnt is -1.
        if np.count_nonzero(log2phy != -1) != listed_count:
            return False
        offsets = index.expert_row * width
        offsets -= firsts[w]
        positions = np.repeat(offsets, counts)
        positions += index.listed
        listed = log2phy.reshape(-1)[positions]
        if listed.min() < 0 or listed.max() >= num_replicas:
            return False
        # Write each listed entry's expert into the slot it names. There are exactly L*R entries, so the
        # result equals phy2log only when every slot was named once, by an entry of the expert it holds;
        # then each expert holds as many slots as it lists, logcnt, so phy2log and logcnt agree too.
        seen.fill(-1)
        listed += index.layer_base_r
        positions //= width
        positions -= index.layer_base_listed
        seen[listed] = positions
        if not np.array_equal(seen, phy2log[w].reshape(-1)):
            return False
    return True


def _check_form(
    phy2log: np.ndarray, log2phy: np.ndarray, logcnt: np.ndarray, num_layers: int, num_experts: int, num_replicas: int
) -> str:
    """Types (plain numpy arrays), dtypes, NaN and shapes: what must hold before values can be compared."""
    for name, arr in (("phy2log", phy2log), ("log2phy", log2phy), ("logcnt", logcnt)):
        # exactly ndarray: a subclass (a masked array, or one overriding `!=` or `min`) answers the checks below
        # through its own methods, and could hide what it holds
        if type(arr) is not np.ndarray:
            return f"output types: {name} must be an integer tensor, got {type(arr).__name__}"
        if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
            return f"NaN: {name} holds NaN at {_first(np.isnan(arr))}"
        if arr.dtype != np.int64:
            return f"dtype: {name} must be int64, got {arr.dtype}"
    expected = {"phy2log": (num_layers, num_replicas), "logcnt": (num_layers, num_experts)}
    for name, arr in (("phy2log", phy2log), ("logcnt", logcnt)):
        if arr.shape != expected[name]:
            return f"shape: {name} must be {list(expected[name])}, got {list(arr.shape)}"
    if log2phy.ndim != 3 or log2phy.shape[:2] != (num_layers, num_experts):
        return f"shape: log2phy must be [{num_layers}, {num_experts}, X], got {list(log2phy.shape)}"
    return ""


def validate_placement(
    phy2log: np.ndarray,
    log2phy: np.ndarray,
    logcnt: np.ndarray,
    num_layers: int,
    num_experts: int,
    num_replicas: int,
    load: np.ndarray | None = None,
) -> str:
    """Return "" when the placement obeys the contract, else one line naming the broken rule."""
    problem = _check_form(phy2log, log2phy, logcnt, num_layers, num_experts, num_replicas)
    if problem:
        return problem

    # Each check first asks one cheap question of the whole array (a min, a max, an equality) and builds
    # the mask that names the first offender only when the answer is wrong: a correct placement, the
    # common case, costs a few passes over its arrays.
    if phy2log.size and (phy2log.min() < 0 or phy2log.max() >= num_experts):
        layer, slot = _first((phy2log < 0) | (phy2log >= num_experts))
        return f"id range: phy2log[{layer}, {slot}] = {phy2log[layer, slot]} is not an expert id in [0, {num_experts})"

    if logcnt.size and logcnt.min() < 1:
        layer, expert = _first(logcnt < 1)
        carried = ""
        if load is not None and load[layer, expert] > 0:
            carried = f" though it carries {int(load[layer, expert])} tokens"
        return f"zero replicas: expert {expert} in layer {layer} has logcnt {logcnt[layer, expert]}{carried}"

    sums = logcnt.sum(axis=1)
    if (sums != num_replicas).any():
        layer = _first(sums != num_replicas)[0]
        return f"replica count: logcnt row of layer {layer} sums to {sums[layer]}, not {num_replicas}"

    index = _indices(num_layers, num_experts, num_replicas)
    actual = np.bincount((index.layer_base_e + phy2log).ravel(), minlength=num_layers * num_experts)
    actual = actual.reshape(num_layers, num_experts)
    if not np.array_equal(actual, logcnt):
        layer, expert = _first(actual != logcnt)
        return (
            f"inconsistent maps: logcnt[{layer}, {expert}] = {logcnt[layer, expert]} but phy2log "
            f"gives expert {expert} {actual[layer, expert]} slots"
        )

    width = log2phy.shape[2]
    if width < logcnt.max():
        return f"shape: log2phy has room for {width} replicas but some expert has {logcnt.max()}"
    # Where each expert's listed slots sit in log2phy.ravel(): (layer, expert, j) for j < logcnt, in order.
    # Index arithmetic over the L*R listed entries keeps the work off the padded [L, E, X] array. The
    # rows of logcnt sum to R, so there are exactly L*R listed entries, the k-th of them at
    # k + (its expert's start in log2phy.ravel()) - (its expert's first k).
    counts = logcnt.ravel()
    firsts = np.cumsum(counts) - counts
    positions = index.listed + np.repeat(index.expert_row * width - firsts, counts)
    listed = log2phy.ravel()[positions]
    if np.count_nonzero(log2phy != -1) != np.count_nonzero(listed != -1):  # something set past logcnt
        used = np.arange(width)[None, None, :] < logcnt[:, :, None]
        layer, expert, j = _first(~used & (log2phy != -1))
        return (f"inconsistent maps: log2phy[{layer}, {expert}, {j}] = {log2phy[layer, expert, j]} past logcnt "
                "must be -1")

    def where(k: int) -> str:
        layer, expert, j = np.unravel_index(positions[k], log2phy.shape)
        return f"log2phy[{layer}, {expert}, {j}] = {log2phy[layer, expert, j]}"

    if listed.size and (listed.min() < 0 or listed.max() >= num_replicas):
        out_of_range = (listed < 0) | (listed >= num_replicas)
        return f"id range: {where(int(np.argmax(out_of_range)))} is not a slot in [0, {num_replicas})"
    flat = index.layer_base_r + listed  # index into phy2log.ravel()
    owners = phy2log.ravel()[flat]
    expert_of = positions // width - index.layer_base_listed  # (layer * E + expert) - layer * E
    if not np.array_equal(owners, expert_of):
        k = int(np.argmax(owners != expert_of))
        return f"inconsistent maps: {where(k)}, but phy2log puts expert {owners[k]} there"
    # every listed slot belongs to its expert and each expert lists logcnt slots, so a repeat would
    # leave some slot unlisted: count how often each slot is listed
    times = np.bincount(flat, minlength=num_layers * num_replicas)
    if times.size and (times.min() != 1 or times.max() != 1):
        times = times.reshape(num_layers, num_replicas)
        layer, slot = _first(times != 1)
        return f"inconsistent maps: slot {slot} of layer {layer} is listed {times[layer, slot]} times in log2phy"
    return ""


@dataclass(frozen=True)
class _Indices:
    """Index arrays that depend only on the shape, shared by every window of that shape (read-only)."""

    layer_base_e: np.ndarray  # [L, 1]: layer * E
    layer_base_r: np.ndarray  # [L * R]: layer * R of the k-th listed entry
    layer_base_listed: np.ndarray  # [L * R]: layer * E of the k-th listed entry
    listed: np.ndarray  # [L * R]: k
    expert_row: np.ndarray  # [L * E]: layer * E + expert


@lru_cache(maxsize=16)
def _indices(num_layers: int, num_experts: int, num_replicas: int) -> _Indices:
    layer_of = np.repeat(np.arange(num_layers, dtype=np.int64), num_replicas)
    arrays = _Indices(
        layer_base_e=np.arange(num_layers, dtype=np.int64)[:, None] * num_experts,
        layer_base_r=layer_of * num_replicas,
        layer_base_listed=layer_of * num_experts,
        listed=np.arange(num_layers * num_replicas, dtype=np.int64),
        expert_row=np.arange(num_layers * num_experts, dtype=np.int64),
    )
    for array in vars(arrays).values():
        array.flags.writeable = False
    return arrays
