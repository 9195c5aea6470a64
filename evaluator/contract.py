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
    actual = np.zeros((num_layers, num_experts), dtype=np.int64)
    np.add.at(actual, (np.broadcast_to(rows, phy2log.shape), phy2log), 1)
    if (actual != logcnt).any():
        layer, expert = _first(actual != logcnt)
        return (
            f"inconsistent maps: logcnt[{layer}, {expert}] = {logcnt[layer, expert]} but phy2log "
            f"gives expert {expert} {actual[layer, expert]} slots"
        )

    width = log2phy.shape[2]
    if width < logcnt.max():
        return f"shape: log2phy has room for {width} replicas but some expert has {logcnt.max()}"
    used = np.arange(width)[None, None, :] < logcnt[:, :, None]
    padding_wrong = ~used & (log2phy != -1)
    if padding_wrong.any():
        layer, expert, j = _first(padding_wrong)
        return f"inconsistent maps: log2phy[{layer}, {expert}, {j}] = {log2phy[layer, expert, j]} past logcnt must be -1"
    out_of_range = used & ((log2phy < 0) | (log2phy >= num_replicas))
    if out_of_range.any():
        layer, expert, j = _first(out_of_range)
        return f"id range: log2phy[{layer}, {expert}, {j}] = {log2phy[layer, expert, j]} is not a slot in [0, {num_replicas})"
    slots = np.where(used, log2phy, 0)
    owner = np.take_along_axis(phy2log, slots.reshape(num_layers, -1), axis=1).reshape(slots.shape)
    wrong_owner = used & (owner != np.arange(num_experts)[None, :, None])
    if wrong_owner.any():
        layer, expert, j = _first(wrong_owner)
        return (
            f"inconsistent maps: log2phy[{layer}, {expert}, {j}] = slot {log2phy[layer, expert, j]}, "
            f"but phy2log puts expert {phy2log[layer, log2phy[layer, expert, j]]} there"
        )
    # every listed slot belongs to its expert and each expert lists logcnt slots, so a repeat would
    # leave some slot unlisted: count how often each slot is listed
    listed = np.zeros((num_layers, num_replicas), dtype=np.int64)
    np.add.at(listed, (np.broadcast_to(rows[:, :, None], slots.shape)[used], slots[used]), 1)
    if (listed != 1).any():
        layer, slot = _first(listed != 1)
        return f"inconsistent maps: slot {slot} of layer {layer} is listed {listed[layer, slot]} times in log2phy"
    return ""
