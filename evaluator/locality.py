"""Locality: how many nodes a token's experts span under a placement (the `cross_node` metric).

Balancedness sees only the hottest GPU, so a placement that scatters the experts one token picks over
every node costs nothing there, although each extra node is one more inter-node dispatch and combine.
Group-limited routing (DeepSeek-V3: 8 expert groups, each token's top-8 experts inside its top-4 groups)
exists to keep that number small, and a hierarchical balancer keeps a group on one node for it.

A trace may carry routed-token samples (`Trace.routes [S, L, K]`: the K distinct experts sampled token s
chose in layer l; `Trace.route_steps [S]`: its step, non-decreasing). For each sampled token in a scored
window and each layer, this module counts the fewest nodes that together hold a replica of every one of
its K experts under the plan scored on that window. That is the best case a router could reach by picking,
for each expert, the replica on the most convenient node: a lower bound on the nodes a token's dispatch
must reach, not what a real router (which spreads tokens over all replicas for balance) would pay.

The minimum is a set cover (nodes are sets, the token's experts the elements). Up to EXACT_MAX_NODES
nodes it is solved exactly with bit tricks: each expert's nodes form a bit mask; every nonempty subset of
nodes gets one bit of a "subsets that touch this expert" word; the AND of those words over the K experts
leaves the subsets that cover the token, and the smallest of them is found size by size. Above that,
a greedy cover (take the node serving most uncovered experts, repeat) gives an estimate that may exceed
the minimum. Everything is a few array operations over windows, tokens, layers and experts.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from evolve.errors import UserError

EXACT_MAX_NODES = 6  # 2**6 - 1 = 63 node subsets: one bit each in a uint64 word
UNAVAILABLE_NO_ROUTES = ("the trace carries no routed-token samples (imported traces and older trace files carry "
                         "no routes), so the nodes a token's experts span cannot be measured")


@dataclass(frozen=True)
class RouteSamples:
    """Checked route samples of a trace: `routes [S, L, K]` expert ids (any integer type), `steps [S]`
    non-decreasing int64."""

    routes: np.ndarray
    steps: np.ndarray


def route_samples(trace: Any) -> RouteSamples | None:
    """The trace's route samples, checked against its shape; None when it carries none.

    Route samples are untrusted input like the counts: a malformed array is one clear error."""
    routes = getattr(trace, "routes", None)
    steps = getattr(trace, "route_steps", None)
    if routes is None and steps is None:
        return None
    name = trace.meta.get("name", "the trace") if isinstance(getattr(trace, "meta", None), dict) else "the trace"
    if routes is None or steps is None:
        raise UserError(f"{name}: routes and route_steps must come together; re-generate the trace")
    routes, steps = np.asarray(routes), np.asarray(steps)
    if routes.ndim != 3 or routes.shape[1] != trace.num_layers or routes.shape[2] < 1:
        raise UserError(f"{name}: routes must be [samples, {trace.num_layers} layers, top-k], got shape "
                        f"{list(routes.shape)}; re-generate the trace")
    if steps.shape != (routes.shape[0],):
        raise UserError(f"{name}: route_steps must be [{routes.shape[0]}] (one step per sampled token), got shape "
                        f"{list(steps.shape)}; re-generate the trace")
    if not (np.issubdtype(routes.dtype, np.integer) and np.issubdtype(steps.dtype, np.integer)):
        raise UserError(f"{name}: routes and route_steps must be integer arrays, got {routes.dtype} and "
                        f"{steps.dtype}; re-generate the trace")
    if routes.size and (routes.min() < 0 or routes.max() >= trace.num_experts):
        raise UserError(f"{name}: routes hold expert ids outside [0, {trace.num_experts}); re-generate the trace")
    if steps.size and (steps.min() < 0 or steps.max() >= trace.steps or np.any(np.diff(steps) < 0)):
        raise UserError(f"{name}: route_steps must be non-decreasing steps in [0, {trace.steps}); "
                        "re-generate the trace")
    return RouteSamples(routes, steps.astype(np.int64))  # routes as given (int16): only measured rows are widened


def node_masks(phy2log: np.ndarray, num_nodes: int, num_experts: int) -> np.ndarray:
    """`[..., E]` int64 bit mask of the nodes holding a replica of each expert, for plans `phy2log [..., R]`.

    Slots are split evenly over nodes (slot s on GPU s // (R/G), GPU g on node g // (G/N), so node
    s // (R/N))."""
    plans = np.asarray(phy2log, dtype=np.int64)
    if num_nodes <= 8:
        return _node_bytes(plans, num_nodes, num_experts).astype(np.int64)
    per_node = plans.shape[-1] // num_nodes
    masks = np.zeros((*plans.shape[:-1], num_experts), dtype=np.int64)
    for node in range(num_nodes):
        present = np.zeros_like(masks, dtype=bool)
        np.put_along_axis(present, plans[..., node * per_node:(node + 1) * per_node], True, axis=-1)
        masks |= present.astype(np.int64) << node
    return masks


def _node_bytes(plans: np.ndarray, num_nodes: int, num_experts: int) -> np.ndarray:
    """`node_masks` as uint8, for at most 8 nodes: one scatter of every slot into a [rows, N, E] presence
    array, its node axis then folded into bits (a scatter per node was three times slower)."""
    *lead, num_slots = plans.shape
    rows = int(np.prod(lead, dtype=np.int64))
    present = np.zeros((rows, num_nodes, num_experts), dtype=bool)
    present.reshape(-1)[(_slot_bases(rows, num_nodes, num_experts, num_slots) + plans.reshape(rows, num_slots))
                        .reshape(-1)] = True
    bits = present.view(np.uint8)
    masks = bits[:, 0].copy()
    for node in range(1, num_nodes):  # a shift and an OR per node over [rows, E] bytes (packbits was slower)
        masks |= bits[:, node] << node
    return masks.reshape(*lead, num_experts)


@lru_cache(maxsize=16)
def _slot_bases(rows: int, num_nodes: int, num_experts: int, num_slots: int) -> np.ndarray:
    """`[rows, R]`: where (row, slot's node, expert 0) sits in a flat [rows, N, E] array (read-only)."""
    node_of_slot = np.arange(num_slots, dtype=np.int64) // (num_slots // num_nodes)
    bases = (np.arange(rows, dtype=np.int64)[:, None] * num_nodes + node_of_slot[None, :]) * num_experts
    bases.flags.writeable = False
    return bases


@lru_cache(maxsize=None)
def _cover_tables(num_nodes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """touches[m]: a word with bit u-1 set for every nonempty node subset u that meets node mask m;
    by_size[s]: the bits of the subsets of s nodes; smallest[w]: the size of the smallest subset in word w
    (a lookup table, when words have at most 16 bits, else None)."""
    width = (1 << num_nodes) - 1  # bits per word: one per nonempty subset
    dtype = np.uint16 if width <= 16 else np.uint32 if width <= 32 else np.uint64
    subsets = np.arange(1, width + 1, dtype=np.uint64)
    bits = np.uint64(1) << (subsets - np.uint64(1))
    masks = np.arange(1 << num_nodes, dtype=np.uint64)
    meets = (masks[:, None] & subsets[None, :]) != 0
    touches = np.bitwise_or.reduce(np.where(meets, bits[None, :], np.uint64(0)), axis=1).astype(dtype)
    sizes = np.array([bin(int(u)).count("1") for u in subsets])
    by_size = np.array([np.bitwise_or.reduce(np.where(sizes == s, bits, np.uint64(0))) for s in range(num_nodes + 1)],
                       dtype=np.uint64).astype(dtype)
    smallest = None
    if width <= 16:
        smallest = _smallest_size(np.arange(1 << width, dtype=dtype), by_size, num_nodes).astype(np.uint8)
    return touches, by_size, smallest


def _smallest_size(covering: np.ndarray, by_size: np.ndarray, num_nodes: int) -> np.ndarray:
    """Size of the smallest subset set in each word (num_nodes when none is: every expert has a replica
    somewhere, so all nodes together always cover)."""
    spanned = np.full(covering.shape, num_nodes, dtype=np.int64)
    for size in range(num_nodes - 1, 0, -1):  # smallest size wins: overwrite from the largest down
        spanned[(covering & by_size[size]) != 0] = size
    return spanned


def _smallest(covering: np.ndarray, num_nodes: int) -> np.ndarray:
    _, by_size, smallest = _cover_tables(num_nodes)
    if smallest is not None:
        return smallest[covering].astype(np.int64)
    return _smallest_size(covering, by_size, num_nodes)


def min_nodes_exact(token_masks: np.ndarray, num_nodes: int) -> np.ndarray:
    """Fewest nodes covering every expert, for node masks `[..., K]` (each nonzero): `[...]` int64."""
    if num_nodes > EXACT_MAX_NODES:
        raise ValueError(f"the exact cover handles at most {EXACT_MAX_NODES} nodes, not {num_nodes}")
    touches = _cover_tables(num_nodes)[0]
    covering = np.bitwise_and.reduce(touches[token_masks], axis=-1)  # subsets that meet every expert
    return _smallest(covering, num_nodes)


def min_nodes_greedy(token_masks: np.ndarray, num_nodes: int) -> np.ndarray:
    """Greedy cover of node masks `[..., K]`: take the node serving most uncovered experts, repeat.
    At least the exact minimum; equal to it in most cases."""
    on_node = ((token_masks[..., None] >> np.arange(num_nodes)) & 1).astype(bool)  # [..., K, N]
    uncovered = np.ones(token_masks.shape, dtype=bool)
    spanned = np.zeros(token_masks.shape[:-1], dtype=np.int64)
    for _ in range(min(num_nodes, token_masks.shape[-1])):
        open_rows = uncovered.any(-1)
        if not open_rows.any():
            break
        gain = (on_node & uncovered[..., None]).sum(-2)  # [..., N]
        best = gain.argmax(-1)
        uncovered &= ((token_masks >> best[..., None]) & 1) == 0
        spanned += open_rows
    return spanned


def min_nodes(token_masks: np.ndarray, num_nodes: int) -> np.ndarray:
    """The fewest nodes a token's experts can be served from: exact up to EXACT_MAX_NODES, greedy above."""
    if num_nodes <= EXACT_MAX_NODES:
        return min_nodes_exact(token_masks, num_nodes)
    return min_nodes_greedy(token_masks, num_nodes)


@dataclass(frozen=True)
class WindowTokens:
    """The sampled tokens measured in the scored windows, laid out for one gather per evaluation."""

    plan: np.ndarray  # [T] the scored window (= plan) index of each measured token
    index: np.ndarray  # [K, T, L] flat position of (plan, layer, expert) in a [W, L, E] array
    num_windows: int
    sampled: int  # sampled tokens in the scored windows, before the per-window cap

    @property
    def empty(self) -> bool:
        return self.plan.size == 0


def assign_windows(samples: RouteSamples, window: int, first_window: int, num_windows: int, total_steps: int,
                   num_experts: int, cap: int = 0) -> WindowTokens:
    """The tokens of scored windows `first_window .. first_window + num_windows - 1` (each `window` steps;
    the last may end early with the trace), at most `cap` per window (0: all), evenly spaced over the
    window's samples, each with the index of the plan scored on its window."""
    bounds = np.minimum((first_window + np.arange(num_windows + 1)) * window, total_steps)
    edges = np.searchsorted(samples.steps, bounds, side="left")
    rows, plan = [], []
    for i in range(num_windows):
        lo, count = int(edges[i]), int(edges[i + 1] - edges[i])
        take = count if not cap or count <= cap else cap
        rows.append(lo + (np.arange(take) * count) // take if take else np.zeros(0, dtype=np.int64))
        plan.append(np.full(take, i, dtype=np.int64))
    rows_all, plan_all = np.concatenate(rows), np.concatenate(plan)
    routes = samples.routes[rows_all].astype(np.int64)  # [T, L, K]
    num_layers = routes.shape[1]
    base = (plan_all[:, None] * num_layers + np.arange(num_layers)[None, :]) * num_experts  # [T, L]
    index = base[None] + np.moveaxis(routes, -1, 0)  # [K, T, L]: each k a contiguous block
    return WindowTokens(plan_all, np.ascontiguousarray(index, dtype=np.intp), num_windows,
                        int(edges[-1] - edges[0]))


@dataclass
class Locality:
    """Per scored window: sampled tokens, token-layers, nodes spanned and token-layers on several nodes."""

    tokens: np.ndarray  # [W]
    token_layers: np.ndarray  # [W]
    spanned: np.ndarray  # [W] sum of nodes spanned over the window's token-layers
    multi: np.ndarray  # [W] token-layers spanning more than one node
    num_nodes: int


def measure(plans: np.ndarray, tokens: WindowTokens, num_nodes: int, num_experts: int) -> Locality:
    """Nodes spanned by each scored window's measured tokens under that window's plan `plans [W, L, R]`."""
    plans = np.asarray(plans, dtype=np.int64)
    masks = _node_bytes(plans, num_nodes, num_experts) if num_nodes <= 8 else node_masks(plans, num_nodes, num_experts)
    if num_nodes <= EXACT_MAX_NODES:
        words = _cover_tables(num_nodes)[0][masks]  # [W, L, E]: the node subsets that reach each expert
        covering = np.bitwise_and.reduce(np.take(words, tokens.index), axis=0)  # [T, L]
        spanned = _smallest(covering, num_nodes)
    else:
        spanned = min_nodes_greedy(np.moveaxis(np.take(masks, tokens.index), 0, -1), num_nodes)
    w = tokens.num_windows
    count = np.bincount(tokens.plan, minlength=w)
    return Locality(
        tokens=count,
        token_layers=count * spanned.shape[1],
        spanned=np.bincount(tokens.plan, weights=spanned.sum(-1), minlength=w),
        multi=np.bincount(tokens.plan, weights=(spanned > 1).sum(-1), minlength=w),
        num_nodes=num_nodes,
    )


def locality_metrics(loc: Locality) -> dict[str, float]:
    """Pooled over every sampled token-layer of the scored windows (empty when none was sampled)."""
    total = float(loc.token_layers.sum())
    if total == 0:
        return {}
    return {
        "cross_node": float(loc.spanned.sum()) / total,
        "cross_node_share": float(loc.multi.sum()) / total,
        "cross_node_tokens": float(loc.tokens.sum()),
    }


def locality_per_window(loc: Locality, i: int) -> dict[str, float]:
    """The figures that go beside window `i`'s balancedness (none for a window without samples)."""
    layers = float(loc.token_layers[i])
    if layers == 0:
        return {}
    return {
        "cross_node": float(loc.spanned[i]) / layers,
        "cross_node_share": float(loc.multi[i]) / layers,
        "cross_node_tokens": float(loc.tokens[i]),
    }


def pooled(per_window: list[dict[str, float]]) -> dict[str, float]:
    """`locality_metrics` recomputed from per-window entries (for a subset of windows): token-weighted."""
    rows = [w for w in per_window if w.get("cross_node_tokens")]
    tokens = sum(w["cross_node_tokens"] for w in rows)
    if not tokens:
        return {}
    return {
        "cross_node": sum(w["cross_node"] * w["cross_node_tokens"] for w in rows) / tokens,
        "cross_node_share": sum(w["cross_node_share"] * w["cross_node_tokens"] for w in rows) / tokens,
        "cross_node_tokens": float(tokens),
    }
