"""How alike two traces' hot experts are: whether a holdout really tests generalisation.

A program tuned on the `search` split can learn which experts are hot (their ids, per layer). A holdout
from the same router model shares those hot experts, so it rewards that memory; a split from another
router model of the same shape does not. Two figures, both per (layer, expert) over the whole trace:

* share correlation: Pearson correlation of each expert's share of its layer's routed load;
* hot overlap: of each layer's hottest `HOT_FRACTION` of experts in one trace, the share that are also
  among the hottest in the other, averaged over layers (two unrelated routers give about HOT_FRACTION).
"""
from __future__ import annotations

import numpy as np

from evaluator.traces.trace import Trace, TraceError

HOT_FRACTION = 0.1


def expert_shares(trace: Trace) -> np.ndarray:
    """`[layers, experts]` share of each layer's routed load over the whole trace."""
    load = trace.counts.sum(axis=0, dtype=np.float64)
    return load / np.maximum(load.sum(axis=-1, keepdims=True), 1e-300)


def share_correlation(a: Trace, b: Trace) -> float:
    """Pearson correlation of per-(layer, expert) load shares of two traces of the same shape."""
    sa, sb = _same_shape(a, b)
    return float(np.corrcoef(sa.ravel(), sb.ravel())[0, 1])


def hot_overlap(a: Trace, b: Trace, fraction: float = HOT_FRACTION) -> float:
    """Mean over layers of the share of `a`'s hottest experts that are also among `b`'s hottest."""
    sa, sb = _same_shape(a, b)
    k = max(1, int(round(fraction * sa.shape[-1])))
    top_a = np.argsort(-sa, axis=-1, kind="stable")[:, :k]
    top_b = np.argsort(-sb, axis=-1, kind="stable")[:, :k]
    hits = (top_a[:, :, None] == top_b[:, None, :]).any(-1)
    return float(hits.mean())


def _same_shape(a: Trace, b: Trace) -> tuple[np.ndarray, np.ndarray]:
    if a.counts.shape[1:] != b.counts.shape[1:]:
        raise TraceError(f"traces of different shapes ({a.num_layers}x{a.num_experts} and "
                         f"{b.num_layers}x{b.num_experts}) have no expert-by-expert similarity")
    return expert_shares(a), expert_shares(b)
