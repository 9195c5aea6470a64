"""Paired comparison of balancers on the same scoring windows: which is better, by how much, how sure.

Every program is scored on the same windows, so per-window differences cancel what the windows share
(a hard window is hard for both). Consecutive windows are correlated, so the mean difference gets a
circular block bootstrap 95% interval (`evaluator.results.bootstrap`: blocks of consecutive windows within
each dataset, block length from the lag-1 autocorrelation, Student's t on the number of blocks; seeded
numpy, so the interval is reproducible). The naive iid bootstrap interval is shown beside it for contrast.
Several programs against one baseline are several tests: significance then uses Holm's correction over
the comparisons made. Runtime is compared as the per-window ratio of call times measured in the same
session.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from evaluator.results.bootstrap import BlockInterval, block_bootstrap, holm
from evaluator.results.leaderboard import Program, load_dataset, splits_of
from evaluator.task import EplbTask, EvalOptions
from evolve.errors import UserError
from evolve.task import Result

PER_WINDOW_METRICS = ("balancedness_gpu", "balancedness_expert", "balancedness_node", "balancedness_gpu_effective")


@dataclass
class Interval:
    """A point estimate with a 95% bootstrap interval."""

    value: float
    low: float
    high: float


@dataclass
class PairStats:
    """Program `other` against `baseline` on one set of windows (one dataset, or all pooled)."""

    scope: str  # "all" or "dataset/split"
    windows: int
    baseline_mean: float
    other_mean: float
    difference: Interval  # other - baseline, mean over windows, circular block bootstrap
    wins: int  # windows where other > baseline
    ties: int
    losses: int
    runtime_ratio: Interval  # other time / baseline time: geometric mean with a bootstrap interval
    runtime_ratio_p10: float  # spread of the per-window ratios
    runtime_ratio_p90: float
    naive_difference: Interval  # the iid bootstrap interval, which ignores correlation between windows
    block_lengths: list[int]  # windows per block, one per dataset
    lag1: list[float]  # lag-1 autocorrelation of the differences, one per dataset (nan: too few windows)
    blocks: int  # whole blocks the interval rests on
    df: int  # degrees of freedom of its t quantile
    p_value: float  # two-sided, for "no difference"
    p_holm: float  # Holm-adjusted over the comparisons made (equal to p_value for one comparison)

    @property
    def significant(self) -> bool:
        return self.p_holm < 0.05 and (self.difference.low > 0 or self.difference.high < 0)

    @property
    def win_rate(self) -> float:
        return self.wins / max(self.windows, 1)


@dataclass
class Comparison:
    metric: str
    baseline: str
    other: str
    pooled: PairStats | None
    per_dataset: list[PairStats] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # "program on dataset: error"


@dataclass
class CompareReport:
    metric: str
    seed: int
    resamples: int
    stamps: list[str]
    comparisons: list[Comparison]

    @property
    def tests(self) -> int:
        """Comparisons whose significance Holm's correction accounts for."""
        return sum(1 for c in self.comparisons if c.pooled is not None)

    def to_json(self) -> str:
        return json.dumps(finite_json({**asdict(self), "holm_tests": self.tests}), indent=2)


def finite_json(value: Any) -> Any:
    """The same structure with NaN (an undefined autocorrelation) as null: strict JSON has no NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_json(v) for v in value]
    return value


def stratified_bootstrap(values: np.ndarray, strata: np.ndarray, rng: np.random.Generator, resamples: int,
                         statistic: str = "mean") -> tuple[float, float]:
    """Naive 95% percentile interval of the mean of `values` (or the geometric mean: statistic="gmean").

    Windows are resampled one by one with replacement within each stratum (dataset), keeping each
    stratum's size. This treats windows as independent; it is shown only beside the block interval.
    """
    x = np.log(values) if statistic == "gmean" else np.asarray(values, dtype=np.float64)
    totals = np.zeros(resamples)
    for stratum in np.unique(strata):
        part = x[strata == stratum]
        picks = rng.integers(0, part.size, size=(resamples, part.size))
        totals += part[picks].sum(axis=1)
    means = totals / x.size
    low, high = np.percentile(means, [2.5, 97.5])
    if statistic == "gmean":
        return float(np.exp(low)), float(np.exp(high))
    return float(low), float(high)


def pair_stats(scope: str, base: np.ndarray, other: np.ndarray, base_rt: np.ndarray, other_rt: np.ndarray,
               strata: np.ndarray, seed: int, resamples: int) -> PairStats:
    """Paired statistics of `other - base` over matching windows."""
    rng = np.random.default_rng(seed)
    diff = other - base
    block: BlockInterval = block_bootstrap(diff, strata, rng, resamples)
    naive_low, naive_high = stratified_bootstrap(diff, strata, rng, resamples)
    ratio = np.maximum(other_rt, 1e-12) / np.maximum(base_rt, 1e-12)
    ratio_block = block_bootstrap(ratio, strata, rng, resamples, log=True)
    # a difference below float noise of the metric is a tie
    tol = 1e-12 * np.maximum(np.abs(base), 1.0)
    return PairStats(
        scope=scope,
        windows=int(diff.size),
        baseline_mean=float(base.mean()),
        other_mean=float(other.mean()),
        difference=Interval(float(diff.mean()), block.low, block.high),
        wins=int((diff > tol).sum()),
        ties=int((np.abs(diff) <= tol).sum()),
        losses=int((diff < -tol).sum()),
        runtime_ratio=Interval(float(np.exp(np.log(ratio).mean())), ratio_block.low, ratio_block.high),
        runtime_ratio_p10=float(np.percentile(ratio, 10)),
        runtime_ratio_p90=float(np.percentile(ratio, 90)),
        naive_difference=Interval(float(diff.mean()), naive_low, naive_high),
        block_lengths=list(block.block_lengths),
        lag1=list(block.lag1),
        blocks=block.blocks,
        df=block.df,
        p_value=block.p_value,
        p_holm=block.p_value,
    )


def window_values(result: Result, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per scored window: the metric and the balancer's call time."""
    values = np.array([w[metric] for w in result.per_window], dtype=np.float64)
    times = np.array([w["runtime_s"] for w in result.per_window], dtype=np.float64)
    return values, times


def evaluate_all(programs: list[Program], datasets: list[str], splits: list[str],
                 options: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, Result]]]:
    """Every program on every (dataset, split), all of one dataset in the same session.

    Returns the stamp line of each dataset and results keyed by "dataset/split", then program name.
    """
    stamps: list[str] = []
    results: dict[str, dict[str, Result]] = {}
    for dataset in datasets:
        for split in splits_of(dataset, splits):
            opts = EvalOptions.from_dict({**options, "dataset": dataset, "split": split})
            task = EplbTask(opts, trace=load_dataset(opts))
            stamp = task.stamp()
            scope = f"{stamp['dataset']['name']}/{stamp['dataset']['split']}"
            if scope in results:
                scope = f"{dataset}/{split}"
            stamps.append(f"{scope}: sha256 {stamp['dataset']['sha256']}, evaluator {stamp['evaluator_version']}, "
                          f"protocol {opts.protocol}")
            results[scope] = {p.name: task.evaluate(p.code) for p in programs}
    return stamps, results


def compare_results(names: list[str], results: dict[str, dict[str, Result]], metric: str, seed: int = 0,
                    resamples: int = 10000) -> list[Comparison]:
    """Each program after the first against the first, per dataset and pooled."""
    if metric not in PER_WINDOW_METRICS:
        raise UserError(f"--metric must be one of {', '.join(PER_WINDOW_METRICS)}, got '{metric}'")
    baseline, comparisons = names[0], []
    for other in names[1:]:
        comparison = Comparison(metric, baseline, other, None)
        pooled: list[tuple[np.ndarray, ...]] = []
        for index, (scope, by_name) in enumerate(results.items()):
            broken = [n for n in (baseline, other) if not by_name[n].correct]
            if broken:
                comparison.failures += [f"{n} on {scope}: {by_name[n].error}" for n in broken]
                continue
            b, b_rt = window_values(by_name[baseline], metric)
            o, o_rt = window_values(by_name[other], metric)
            strata = np.full(b.size, index)
            comparison.per_dataset.append(pair_stats(scope, b, o, b_rt, o_rt, strata, seed, resamples))
            pooled.append((b, o, b_rt, o_rt, strata))
        if pooled:
            b, o, b_rt, o_rt, strata = (np.concatenate(parts) for parts in zip(*pooled))
            comparison.pooled = pair_stats("all", b, o, b_rt, o_rt, strata, seed, resamples)
        comparisons.append(comparison)
    tested = [c.pooled for c in comparisons if c.pooled is not None]
    for stats, adjusted in zip(tested, holm([s.p_value for s in tested])):
        stats.p_holm = adjusted
    return comparisons


# ---- presentation ------------------------------------------------------------------------------------
def verdict(c: Comparison, s: PairStats, tests: int = 1) -> str:
    """One plain sentence: which is better, and whether the data can tell."""
    d = s.difference
    if not (d.low > 0 or d.high < 0):
        return (f"no significant difference: the 95% interval of {c.other} - {c.baseline} "
                f"[{d.low:+.4f}, {d.high:+.4f}] includes 0")
    if not s.significant:
        return (f"no significant difference after Holm's correction for {tests} comparisons: p = {s.p_value:.3g}, "
                f"adjusted {s.p_holm:.3g} (the interval alone excludes 0)")
    better, worse = (c.other, c.baseline) if d.value > 0 else (c.baseline, c.other)
    holm_note = f"; Holm-adjusted p = {s.p_holm:.3g} over {tests} comparisons" if tests > 1 else ""
    return (f"{better} is better than {worse} by {abs(d.value):.4f} {c.metric} per window (significant: the 95% "
            f"interval excludes 0{holm_note})")


def _block_text(s: PairStats) -> str:
    lags = ", ".join("n/a" if np.isnan(r) else f"{r:+.2f}" for r in s.lag1)
    lengths = ", ".join(str(b) for b in s.block_lengths)
    return (f"lag-1 autocorrelation of the differences {lags}; blocks of {lengths} consecutive windows, "
            f"{s.blocks} blocks, t on {s.df} df")


def _ratio_text(s: PairStats, baseline: str) -> str:
    r = s.runtime_ratio
    return (f"{r.value:.2f}x {baseline}'s time per call (geometric mean of per-window ratios, 95% interval "
            f"{r.low:.2f}-{r.high:.2f}x; per-window p10-p90 {s.runtime_ratio_p10:.2f}-{s.runtime_ratio_p90:.2f}x)")


def format_comparison(c: Comparison, datasets: int, tests: int = 1) -> list[str]:
    lines = [f"{c.other} vs {c.baseline} ({c.metric}, higher is better)"]
    lines += [f"  INCORRECT {failure}" for failure in c.failures]
    s = c.pooled
    if s is None:
        lines.append("  nothing to compare: no dataset where both programs are correct")
        return lines
    d = s.difference
    lines += [
        f"  windows   {s.windows} paired scored windows"
        + (f" over {len(c.per_dataset)} datasets" if datasets > 1 else ""),
        f"  blocks    {_block_text(s)}",
        f"  mean      {c.other} {s.other_mean:.4f}, {c.baseline} {s.baseline_mean:.4f}",
        f"  diff      {d.value:+.4f}, 95% CI [{d.low:+.4f}, {d.high:+.4f}] (block bootstrap); naive iid "
        f"[{s.naive_difference.low:+.4f}, {s.naive_difference.high:+.4f}]",
        f"  p-value   {s.p_value:.3g}"
        + (f", Holm-adjusted {s.p_holm:.3g} over {tests} comparisons" if tests > 1 else ""),
        f"  win rate  {s.win_rate:.0%} ({s.wins} wins, {s.ties} ties, {s.losses} losses)",
        f"  runtime   {_ratio_text(s, c.baseline)}",
        f"  verdict   {verdict(c, s, tests)}",
    ]
    if len(c.per_dataset) > 1 or datasets > 1:
        lines.append("  per dataset: (each alone, not corrected for the number of comparisons)")
        width = max(len(p.scope) for p in c.per_dataset)
        for p in c.per_dataset:
            flag = "" if p.difference.low > 0 or p.difference.high < 0 else "  (not significant)"
            lines.append(
                f"    {p.scope.ljust(width)}  {p.windows:>4} windows  diff {p.difference.value:+.4f} "
                f"[{p.difference.low:+.4f}, {p.difference.high:+.4f}]  wins {p.wins}/{p.windows}  "
                f"runtime {p.runtime_ratio.value:.2f}x{flag}"
            )
    return lines


def format_report(report: CompareReport) -> str:
    lines = [f"paired comparison on the same scored windows; circular block bootstrap of consecutive windows "
             f"within each dataset: {report.resamples} resamples, numpy seed {report.seed}"]
    lines += [f"  {stamp}" for stamp in report.stamps]
    if report.tests > 1:
        lines.append(f"  {report.tests} programs compared against {report.comparisons[0].baseline}: significance "
                     f"uses Holm's correction over {report.tests} comparisons")
    for c in report.comparisons:
        lines += ["", *format_comparison(c, len(report.stamps), report.tests)]
    return "\n".join(lines)
