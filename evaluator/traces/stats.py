"""Calibration statistics of a trace: how unbalanced it is, and how the seed balancer fares on it.

Why: simulated traces are only worth searching on if they behave like real serving load, so these are
the figures published for real traces (sources in datasets/CALIBRATION.md), measured the same way:

- imbalance ratio (max - mean) / mean of per-rank and per-slot load, per layer, averaged over layers
  and windows; without EPLB (experts dealt contiguously onto GPUs, one slot each) and with the seed
  balancer in-sample (planned on the window it is scored on). Measured on window totals (what a
  scorer sees) and per step (each step scored with its window's plan, as the published per-iteration
  figures are: that adds per-step sampling noise and whatever drifts inside a window);
- top-10 hot-expert overlap between consecutive windows (how stable the hot spots are), and the share
  of each window's routed load an expert keeps into the next (sum of minima over sum);
- the seed's predictive balancedness (plan on window i, score on window i+1), GPU and slot;
- the Gini coefficient of expert load within a layer and window.

`serving_stats` adds what serving traffic looks like beyond imbalance: two batch sizes (prefill and decode
steps) and the prefill share of tokens, read from the counts; steps dominated by one request, from the
generator's record; and how much a token's expert in one layer predicts the next, from route samples.
Each is None ("unavailable") where the trace cannot support it.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Callable

import numpy as np
import torch

from evaluator.paths import REPO_ROOT
from evaluator.simulate import balancedness, bin_sums, identity_gpu_load, slot_loads
from evaluator.traces.trace import Trace, TraceError

SEED_PATH = REPO_ROOT / "candidates" / "seed.py"

# Published figures for real DeepSeek-R1/V3 serving load; datasets/CALIBRATION.md says where each comes from.
PUBLISHED = {
    "rank_imbalance_no_eplb": 1.564,  # TensorRT-LLM, DeepSeek-R1 at 32-way expert parallelism
    "slot_imbalance_no_eplb": 10.95,  # the same source
    "rank_imbalance_seed": 0.109,  # the same source, with EPLB at 288 slots
    "balancedness_gpu_predictive": 0.66,  # ADRS MoE load-balancing case study: DeepSeek's EPLB on the real trace
    "balancedness_expert_predictive": 0.2988,  # the ADRS repository's own DeepSeek baseline (improvement.txt)
    "load_repeat": 0.8,  # "over 80% of token-to-expert assignments repeat" (no primary source found)
}


@dataclass(frozen=True)
class StatsConfig:
    """The placement configuration the statistics are measured under (standard: DeepSeek-V3 shape)."""

    num_replicas: int = 288
    num_groups: int = 8
    num_nodes: int = 4
    num_gpus: int = 32
    window: int = 100

    @classmethod
    def for_trace(cls, trace: Trace) -> "StatsConfig":
        """The standard configuration scaled to the trace: 8 experts and 9 slots per GPU, 8 GPUs a node."""
        experts = trace.num_experts
        if experts == 256:
            groups = int(trace.meta.get("num_groups") or 1)
            return cls(num_groups=groups if groups > 1 else 1)
        gpus = max(1, experts // 8)
        nodes = max(1, gpus // 8)
        groups = int(trace.meta.get("num_groups") or 1)
        return cls(num_replicas=gpus * (experts // gpus + 1), num_groups=groups, num_nodes=nodes, num_gpus=gpus)


@dataclass(frozen=True)
class TraceStats:
    """Imbalance ratios on window totals (what the scorer sees) and per step (as published, with noise)."""

    windows: int
    rank_imbalance_no_eplb: float
    slot_imbalance_no_eplb: float
    rank_imbalance_seed: float
    slot_imbalance_seed: float
    rank_imbalance_no_eplb_step: float
    slot_imbalance_no_eplb_step: float
    rank_imbalance_seed_step: float
    slot_imbalance_seed_step: float
    top10_overlap: float
    load_repeat: float
    balancedness_gpu_predictive: float
    balancedness_expert_predictive: float
    gini: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def load_seed() -> ModuleType:
    """Import the seed balancer in-process (trusted code; children never run here)."""
    spec = importlib.util.spec_from_file_location("eplb_seed_balancer", SEED_PATH)
    if spec is None or spec.loader is None:
        raise TraceError(f"{SEED_PATH}: cannot load the seed balancer")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def imbalance(bins: torch.Tensor) -> float:
    """Mean over leading axes of (max - mean) / mean over the last axis (bins with no load count as 0)."""
    mean = bins.mean(-1)
    ratio = torch.where(mean > 0, bins.amax(-1) / mean.clamp_min(1e-12) - 1, torch.zeros_like(mean))
    return float(ratio.mean())


def gini(load: torch.Tensor) -> float:
    """Mean Gini coefficient of the last axis."""
    x = load.sort(dim=-1).values
    n = x.size(-1)
    rank = torch.arange(1, n + 1, dtype=x.dtype)
    total = x.sum(-1)
    g = (2 * (x * rank).sum(-1) / (n * total.clamp_min(1e-12))) - (n + 1) / n
    return float(torch.where(total > 0, g, torch.zeros_like(g)).mean())


def top_overlap(windows: torch.Tensor, k: int = 10) -> float:
    """Share of each layer's top-k experts in window i that are still top-k in window i+1."""
    if windows.size(0) < 2:
        return float("nan")
    top = windows.topk(min(k, windows.size(-1)), dim=-1).indices  # [W, L, k]
    hit = (top[1:, :, :, None] == top[:-1, :, None, :]).any(-1).float()
    return float(hit.mean())


def compute_stats(
    trace: Trace,
    config: StatsConfig | None = None,
    balancer: Callable | None = None,
) -> TraceStats:
    """All calibration statistics for one trace; the balancer defaults to `candidates/seed.py`.

    Imbalance ratios are measured per step (iteration) and averaged, as the published figures are;
    the seed plans on each window's total and is scored on that window's steps (in-sample).
    Balancedness follows the predictive protocol on window totals.
    """
    cfg = config or StatsConfig.for_trace(trace)
    loads = trace.windows(cfg.window)  # [W, L, E] float64
    W, L, E = loads.shape
    rebalance = balancer or load_seed().rebalance_experts
    plans = [rebalance(loads[w], cfg.num_replicas, cfg.num_groups, cfg.num_nodes, cfg.num_gpus) for w in range(W)]
    phy2log = torch.stack([p[0] for p in plans]).long()
    logcnt = torch.stack([p[2] for p in plans]).long()

    def ratios(load: torch.Tensor, phy: torch.Tensor, cnt: torch.Tensor) -> list[float]:
        slots = slot_loads(load, phy, cnt)
        return [
            imbalance(identity_gpu_load(load, cfg.num_gpus)),
            imbalance(load),
            imbalance(bin_sums(slots, cfg.num_gpus)),
            imbalance(slots),
        ]

    per_window = ratios(loads, phy2log, logcnt)  # in-sample: each window scored with its own plan
    per_step = torch.zeros(4, dtype=torch.float64)
    for w in range(W):
        steps = torch.from_numpy(trace.counts[w * cfg.window: (w + 1) * cfg.window]).double()  # [T, L, E]
        shape = (steps.size(0), -1, -1)
        per_step += torch.tensor(ratios(steps, phy2log[w].expand(*shape), logcnt[w].expand(*shape)))
    per_step /= W
    if W >= 2:  # predictive: plan on window i, score on window i+1
        slots_next = slot_loads(loads[1:], phy2log[:-1], logcnt[:-1])
        bal_gpu = float(balancedness(bin_sums(slots_next, cfg.num_gpus)).mean())
        bal_slot = float(balancedness(slots_next).mean())
        kept = torch.minimum(loads[1:], loads[:-1]).sum(-1) / loads[:-1].sum(-1).clamp_min(1e-12)
        repeat = float(kept.mean())
    else:
        bal_gpu = bal_slot = repeat = float("nan")
    return TraceStats(
        W,
        *per_window,
        *[float(x) for x in per_step],
        top10_overlap=top_overlap(loads),
        load_repeat=repeat,
        balancedness_gpu_predictive=bal_gpu,
        balancedness_expert_predictive=bal_slot,
        gini=gini(loads),
    )


def format_stats(stats: TraceStats, config: StatsConfig, published: bool = True) -> str:
    """A small table: window-total figure, per-step figure, and the published counterpart."""
    values = stats.as_dict()
    head = (
        f"R={config.num_replicas} groups={config.num_groups} nodes={config.num_nodes} "
        f"gpus={config.num_gpus} window={config.window} ({stats.windows} windows)"
    )
    lines = [head, f"{'statistic':<46} {'window':>8} {'per-step':>9} {'published':>10} {'ratio':>6}"]

    def row(label: str, key: str, step_key: str | None = None) -> None:
        pub = PUBLISHED.get(key) if published else None
        step = f"{values[step_key]:>9.3f}" if step_key else f"{'':>9}"
        tail = f"{pub:>10.3f} {values[key] / pub:>6.2f}" if pub is not None else ""
        lines.append(f"{label:<46} {values[key]:>8.3f} {step} {tail}".rstrip())

    row("per-rank (max-mean)/mean, no EPLB", "rank_imbalance_no_eplb", "rank_imbalance_no_eplb_step")
    row("per-slot (max-mean)/mean, no EPLB", "slot_imbalance_no_eplb", "slot_imbalance_no_eplb_step")
    row("per-rank (max-mean)/mean, seed in-sample", "rank_imbalance_seed", "rank_imbalance_seed_step")
    row("per-slot (max-mean)/mean, seed in-sample", "slot_imbalance_seed", "slot_imbalance_seed_step")
    row("seed predictive balancedness_gpu", "balancedness_gpu_predictive")
    row("seed predictive balancedness_expert", "balancedness_expert_predictive")
    row("top-10 expert overlap, consecutive windows", "top10_overlap")
    row("load an expert keeps into the next window", "load_repeat")
    row("expert-load Gini (per layer and window)", "gini")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Serving realism: batch shapes, one-request bursts, cross-layer routing (datasets/CALIBRATION.md)
# ----------------------------------------------------------------------------------------------------
BIMODAL_THRESHOLD = 5 / 9  # Sarle's bimodality coefficient of a uniform distribution; above it suggests two modes

# Published or stated figures for serving traffic; datasets/CALIBRATION.md says where each comes from.
SERVING_FIGURES = {
    "batch_bimodality": BIMODAL_THRESHOLD,  # stated: the threshold above which a distribution reads as bimodal
    "prefill_token_share": 0.89,  # Splitwise's conversation trace: median prompt about 1,020, output about 129 tokens
    "dominated_step_share": 0.15,  # stated: steps where one prompt carries over half the tokens (long prompts)
    "cross_layer_lift": 0.30,  # stated: top-1 affinity a third of the way from chance to fully determined
}


@dataclass(frozen=True)
class ServingStats:
    """Batch shape from the counts; request structure as the generator recorded it; routes when sampled.

    Every figure that the trace cannot support is None (printed as "unavailable"), never a guess.
    """

    batch_bimodality: float | None  # Sarle's coefficient of tokens per step
    prefill_token_share: float | None  # tokens above the decode baseline in the large-batch mode, over all tokens
    prefill_step_share: float | None  # recorded: steps that carry a prefill chunk
    top_request_share_median: float | None  # recorded: median over steps of the largest request's share
    dominated_step_share: float | None  # recorded: steps where one request carries over half the tokens
    route_samples: int  # sampled tokens with routes (0: none)
    cross_layer_top1: float | None  # mean over layer pairs of P(most common next top-1 | this top-1)
    cross_layer_top1_chance: float | None  # the same with the next layer shuffled across tokens
    cross_layer_lift: float | None  # (affinity - chance) / (1 - chance): 0 independent layers, 1 fully determined

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def tokens_per_step(trace: Trace) -> np.ndarray:
    """Tokens in each step: a layer's routed count over top-k (the first layer; every layer has the same)."""
    top_k = int(trace.meta.get("top_k") or (trace.meta.get("model") or {}).get("top_k") or 1)
    return trace.counts[:, 0, :].sum(-1) / max(top_k, 1)


def bimodality_coefficient(values: np.ndarray) -> float:
    """Sarle's bimodality coefficient (sample skewness and excess kurtosis, bias-corrected); NaN if undefined."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 4:
        return float("nan")
    d = x - x.mean()
    m2 = float((d ** 2).mean())
    if m2 <= 0:
        return float("nan")
    g1 = float((d ** 3).mean()) / m2 ** 1.5
    g2 = float((d ** 4).mean()) / m2 ** 2 - 3
    skew = g1 * math.sqrt(n * (n - 1)) / (n - 2)
    kurt = ((n + 1) * g2 + 6) * (n - 1) / ((n - 2) * (n - 3))
    return (skew ** 2 + 1) / (kurt + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))


def prefill_token_share(tokens: np.ndarray) -> float:
    """Share of all tokens that a large-batch mode adds above the decode baseline; 0 for a one-mode batch.

    Steps split into two groups where the split best separates log batch sizes (Otsu); the baseline is the
    small group's median, so a prefill step's own decode tokens are not counted as prefill.
    """
    x = np.asarray(tokens, dtype=np.float64)
    if x.size < 4 or not bimodality_coefficient(x) > BIMODAL_THRESHOLD:
        return 0.0
    logs = np.sort(np.log(np.maximum(x, 1)))
    best, cut = -1.0, logs[0]
    for i in range(1, logs.size):  # between-group variance of every split of the sorted values
        w = i / logs.size
        between = w * (1 - w) * (logs[:i].mean() - logs[i:].mean()) ** 2
        if between > best:
            best, cut = between, logs[i]
    large = np.log(np.maximum(x, 1)) >= cut
    if large.all() or not large.any():
        return 0.0
    baseline = float(np.median(x[~large]))
    return float(np.clip(x[large] - baseline, 0, None).sum() / x.sum())


def cross_layer_top1(routes: np.ndarray, shuffle_seed: int | None = None) -> float:
    """How well a token's top-1 expert in layer l predicts its top-1 in layer l+1.

    For each adjacent pair, the share of tokens whose next top-1 is the most common successor of their
    current top-1 (sum over experts of the largest cell of the pair's contingency table, over tokens);
    averaged over pairs. Column 0 of `routes` is the top-1 expert. With `shuffle_seed`, the next layer is
    permuted across tokens first: the chance level for the same sample size and marginals (finite samples
    alone put it well above 1 / experts).
    """
    r = np.asarray(routes)
    if r.ndim != 3 or r.shape[0] == 0 or r.shape[1] < 2:
        return float("nan")
    top = r[:, :, 0].astype(np.int64)
    size = int(top.max()) + 1
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    shares = []
    for layer in range(top.shape[1] - 1):
        nxt = top[:, layer + 1] if rng is None else rng.permutation(top[:, layer + 1])
        table = np.zeros((size, size), dtype=np.int64)
        np.add.at(table, (top[:, layer], nxt), 1)
        shares.append(table.max(axis=1).sum() / top.shape[0])
    return float(np.mean(shares))


def serving_stats(trace: Trace) -> ServingStats:
    """The serving-realism figures of one trace (see `ServingStats`)."""
    tokens = tokens_per_step(trace)
    prefill = trace.meta.get("step_prefill")
    top_share = trace.meta.get("step_top_request_share")
    recorded = isinstance(prefill, list) and isinstance(top_share, list) and len(top_share) == trace.steps > 0
    share = np.asarray(top_share, dtype=np.float64) if recorded else None
    routes = trace.routes
    has_routes = routes is not None and routes.shape[0] > 0 and trace.num_layers > 1
    affinity = cross_layer_top1(routes) if has_routes else None
    chance = cross_layer_top1(routes, shuffle_seed=0) if has_routes else None
    return ServingStats(
        batch_bimodality=bimodality_coefficient(tokens) if trace.steps >= 4 else None,
        prefill_token_share=prefill_token_share(tokens) if trace.steps >= 4 else None,
        prefill_step_share=float(np.mean(prefill)) if recorded else None,
        top_request_share_median=float(np.median(share)) if share is not None else None,
        dominated_step_share=float((share > 0.5).mean()) if share is not None else None,
        route_samples=0 if routes is None else int(routes.shape[0]),
        cross_layer_top1=affinity,
        cross_layer_top1_chance=chance,
        cross_layer_lift=(affinity - chance) / (1 - chance) if affinity is not None and chance < 1 else None,
    )


def format_serving(stats: ServingStats) -> str:
    """The serving-realism rows: measured value, then the published or stated figure and where it stands."""
    lines = [f"{'serving realism':<46} {'measured':>11} {'figure':>9}  source"]

    def row(label: str, value: float | None, key: str | None, source: str) -> None:
        shown = f"{value:>11.3f}" if value is not None and math.isfinite(value) else f"{'unavailable':>11}"
        figure = f"{SERVING_FIGURES[key]:>9.3f}" if key else f"{'':>9}"
        lines.append(f"{label:<46} {shown} {figure}  {source}".rstrip())

    row("batch-size bimodality coefficient", stats.batch_bimodality, "batch_bimodality",
        "stated: above 5/9 reads as two modes (prefill and decode)")
    row("prefill share of tokens (from batch sizes)", stats.prefill_token_share, "prefill_token_share",
        "published: Splitwise conversation trace")
    row("steps carrying a prefill chunk (recorded)", stats.prefill_step_share, None, "generator's record")
    row("largest request's share of a step, median", stats.top_request_share_median, None, "generator's record")
    row("steps where one request has > half (recorded)", stats.dominated_step_share, "dominated_step_share",
        "stated: long prompts filling a chunk")
    samples = f"{stats.route_samples} sampled tokens" if stats.route_samples else "no route samples in this trace"
    row("cross-layer top-1 affinity (route samples)", stats.cross_layer_top1, None, samples)
    row("  the same, next layer shuffled (chance)", stats.cross_layer_top1_chance, None, "finite-sample floor")
    row("  lift over chance", stats.cross_layer_lift, "cross_layer_lift",
        "stated: inter-layer expert affinity (ExFlow)")
    return "\n".join(lines)
