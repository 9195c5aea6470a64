"""The balancer contract, checked on what a candidate returned.

`rebalance_experts(weight[L, E], num_replicas, num_groups, num_nodes, num_gpus)` must return
`phy2log [L, R]`, `log2phy [L, E, X]`, `logcnt [L, E]`, all int64, with every expert on at least one
slot, each `logcnt` row summing to R, and `log2phy` listing exactly the slots `phy2log` gives each expert
(padded with -1). Every check is vectorised; the first failure comes back as one line naming the rule
and the first offending (layer, expert) or (layer, slot).
"""
from __future__ import annotations

import numpy as np


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def validate_placements(
    placements: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    num_layers: int,
    num_experts: int,
    num_replicas: int,
    loads: np.ndarray,
) -> str:
    """Check one placement per window; "" when all obey the contract, else "window i: <rule>".

    Windows are checked one by one: stacking them into one pass was slower (the arrays leave the cache).
    """
    for i, (phy2log, log2phy, logcnt) in enumerate(placements):
        problem = validate_placement(phy2log, log2phy, logcnt, num_layers, num_experts, num_replicas, loads[i])
        if problem:
            return f"window {i}: {problem}"
    return ""


def _check_form(
    phy2log: np.ndarray, log2phy: np.ndarray, logcnt: np.ndarray, num_layers: int, num_experts: int, num_replicas: int
) -> str:
    """Types, dtypes, NaN and shapes: what must hold before values can be compared."""
    for name, arr in (("phy2log", phy2log), ("log2phy", log2phy), ("logcnt", logcnt)):
        if not isinstance(arr, np.ndarray):
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

    bad = (phy2log < 0) | (phy2log >= num_experts)
    if bad.any():
        layer, slot = _first(bad)
        return f"id range: phy2log[{layer}, {slot}] = {phy2log[layer, slot]} is not an expert id in [0, {num_experts})"

    if (logcnt < 1).any():
        layer, expert = _first(logcnt < 1)
        carried = ""
        if load is not None and load[layer, expert] > 0:
            carried = f" though it carries {int(load[layer, expert])} tokens"
        return f"zero replicas: expert {expert} in layer {layer} has logcnt {logcnt[layer, expert]}{carried}"

    sums = logcnt.sum(axis=1)
    if (sums != num_replicas).any():
        layer = _first(sums != num_replicas)[0]
        return f"replica count: logcnt row of layer {layer} sums to {sums[layer]}, not {num_replicas}"

    rows = np.arange(num_layers)[:, None]
    actual = np.bincount((rows * num_experts + phy2log).ravel(), minlength=num_layers * num_experts)
    actual = actual.reshape(num_layers, num_experts)
    if (actual != logcnt).any():
        layer, expert = _first(actual != logcnt)
        return (
            f"inconsistent maps: logcnt[{layer}, {expert}] = {logcnt[layer, expert]} but phy2log "
            f"gives expert {expert} {actual[layer, expert]} slots"
        )

    width = log2phy.shape[2]
    if width < logcnt.max():
        return f"shape: log2phy has room for {width} replicas but some expert has {logcnt.max()}"
    # Where each expert's listed slots sit in log2phy.ravel(): (layer, expert, j) for j < logcnt, in order.
    # Index arithmetic over the L*R listed entries keeps the work off the padded [L, E, X] array.
    counts = logcnt.ravel()
    starts = np.repeat(np.arange(counts.size) * width, counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    positions = starts + offsets
    listed = log2phy.ravel()[positions]
    if np.count_nonzero(log2phy != -1) != np.count_nonzero(listed != -1):  # something set past logcnt
        used = np.arange(width)[None, None, :] < logcnt[:, :, None]
        layer, expert, j = _first(~used & (log2phy != -1))
        return (f"inconsistent maps: log2phy[{layer}, {expert}, {j}] = {log2phy[layer, expert, j]} past logcnt "
                "must be -1")
    # exactly R listed entries per layer, since each row of logcnt sums to R
    layer_of = np.repeat(np.arange(num_layers), num_replicas)
    expert_of = np.repeat(np.tile(np.arange(num_experts), num_layers), counts)

    def where(k: int) -> str:
        layer, expert, j = np.unravel_index(positions[k], log2phy.shape)
        return f"log2phy[{layer}, {expert}, {j}] = {log2phy[layer, expert, j]}"

    out_of_range = (listed < 0) | (listed >= num_replicas)
    if out_of_range.any():
        return f"id range: {where(int(np.argmax(out_of_range)))} is not a slot in [0, {num_replicas})"
    flat = layer_of * num_replicas + listed  # index into phy2log.ravel()
    wrong_owner = phy2log.ravel()[flat] != expert_of
    if wrong_owner.any():
        k = int(np.argmax(wrong_owner))
        return f"inconsistent maps: {where(k)}, but phy2log puts expert {phy2log.ravel()[flat[k]]} there"
    # every listed slot belongs to its expert and each expert lists logcnt slots, so a repeat would
    # leave some slot unlisted: count how often each slot is listed
    times = np.bincount(flat, minlength=num_layers * num_replicas).reshape(num_layers, num_replicas)
    if (times != 1).any():
        layer, slot = _first(times != 1)
        return f"inconsistent maps: slot {slot} of layer {layer} is listed {times[layer, slot]} times in log2phy"
    return ""
