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
"""
from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Callable

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
