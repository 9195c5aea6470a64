"""The model shape a trace is scored with: layers, experts, expert groups and top-k, and where each came from.

Why: the number of expert groups changes the score of every hierarchical balancer (DeepSeek's gets a
GPU balancedness of 0.79 with the 8 groups of DeepSeek-V3 and 0.90 with 1 on the same trace), yet most
trace formats do not store it. The rule, in order:

1. a group count given by the user (`traces import --groups N`, `evaluate --groups N`);
2. what the file itself states (our `.npz` metadata; a generated trace's model);
3. the published configuration for the DeepSeek-V3/R1 shape, 58 layers x 256 experts: 8 groups, top-8
   (what the ADRS / OpenEvolve evaluators use for that shape);
4. otherwise unknown: an import is refused with one line asking for `--groups`.
"""
from __future__ import annotations

from typing import Any

from evaluator.traces.trace import Trace, TraceError

# The published evaluation configuration's model shape (DeepSeek-V3/R1): (layers, experts) -> routing.
PUBLISHED_SHAPES: dict[tuple[int, int], dict[str, Any]] = {
    (58, 256): {"name": "deepseek-v3", "top_k": 8, "num_groups": 8},
}
FROM_USER = "--groups"
FROM_FILE = "the trace file"
FROM_PUBLISHED = "the published configuration for 58x256 (DeepSeek-V3/R1)"


def stated_groups(meta: dict[str, Any]) -> int | None:
    """The expert-group count a trace's own metadata states, if any."""
    model = meta.get("model") or {}
    value = model.get("num_groups", meta.get("num_groups"))
    return int(value) if value not in (None, "", 0) else None


def resolve_model(trace: Trace, groups: int | None = None) -> dict[str, Any]:
    """Fill `trace.meta["model"]` (layers, experts, num_groups, top_k) and `meta["groups_from"]`.

    `num_groups` stays None when nothing states it; callers that need it decide what to do (an import
    refuses, an evaluation asks for --groups).
    """
    meta = trace.meta
    model = dict(meta.get("model") or {})
    model["layers"], model["experts"] = trace.num_layers, trace.num_experts
    published = PUBLISHED_SHAPES.get((trace.num_layers, trace.num_experts))
    stated = stated_groups(meta)
    if groups is not None:
        model["num_groups"], source = int(groups), FROM_USER
    elif stated is not None:
        default = f"the generator preset '{meta['preset']}'" if meta.get("preset") else FROM_FILE
        model["num_groups"], source = stated, meta.get("groups_from") or default
    elif published is not None:
        model["num_groups"], source = published["num_groups"], FROM_PUBLISHED
        model.setdefault("name", published["name"])
    else:
        model["num_groups"], source = None, "unknown"
    if model.get("top_k") is None:
        top_k = meta.get("top_k")
        if top_k is None and published is not None and source == FROM_PUBLISHED:
            top_k = published["top_k"]
        model["top_k"] = int(top_k) if top_k is not None else None
    check_groups(model["num_groups"], trace.num_experts, str(meta.get("source", "trace")))
    meta["model"] = model
    meta["num_groups"], meta["top_k"], meta["groups_from"] = model["num_groups"], model["top_k"], source
    return model


def check_groups(groups: int | None, experts: int, where: str) -> None:
    if groups is None:
        return
    if groups < 1 or experts % groups:
        raise TraceError(f"{where}: {groups} expert groups do not divide {experts} experts; pass --groups N with N "
                         f"dividing {experts}")


def require_groups(trace: Trace, fmt: str) -> None:
    """Refuse a trace whose group count nothing states (one line: what is missing and what to pass)."""
    if trace.meta.get("model", {}).get("num_groups") is None:
        raise TraceError(
            f"{trace.meta.get('source', 'trace')}: the {fmt} format records no expert groups and "
            f"{trace.num_layers}x{trace.num_experts} (layers x experts) is not the published 58x256 "
            "configuration; pass --groups N (1 for a model without group-limited routing)"
        )


def describe(model: dict[str, Any]) -> str:
    """`58x256 g8 k8`: layers x experts, groups, top-k ('?' where unknown)."""
    groups = model.get("num_groups")
    top_k = model.get("top_k")
    text = f"{model.get('layers', '?')}x{model.get('experts', '?')} g{groups if groups is not None else '?'}"
    return text + f" k{top_k if top_k is not None else '?'}"
