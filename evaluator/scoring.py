"""Named scorers: how a set of measured metrics becomes one number.

Every scorer reads the same metrics dictionary; each is written down with its formula so a score can
be reproduced by hand. Published scorers are implemented exactly as published (the formulas below), with
one difference in what is timed: our timer covers only the balancer call, not a simulator around it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from evolve.errors import UserError


@dataclass(frozen=True)
class Scorer:
    name: str
    formula: str
    fn: Callable[[dict[str, float]], float]
    uses_time: bool


def _native(m: dict[str, float]) -> float:
    return m["balancedness_gpu"]


# The default objective: balance plus a coarse speed bonus. One octave of speed (twice as fast as the
# reference balancer timed in the same worker) is worth SPEED_WEIGHT of GPU balancedness; the octaves are
# whole numbers, clamped, so timing noise changes a score only when a program's speed sits near an
# octave edge (see docs/search.md).
SPEED_WEIGHT = 0.01
SPEED_OCTAVES = (-3, 4)  # slower than 1/8 of the reference's speed, or faster than 16x, earns nothing more


def speed_octaves(metrics: dict[str, float]) -> int:
    """round(log2(reference median / candidate median)), clamped; 0 when no reference was timed.

    A `speed_octaves` metric, when the task supplies one (the machine's remembered value), wins."""
    if "speed_octaves" in metrics:
        lo, hi = SPEED_OCTAVES
        return int(min(max(int(metrics["speed_octaves"]), lo), hi))
    ratio = metrics.get("speedup_vs_reference")
    if ratio is None or not math.isfinite(ratio) or ratio <= 0:
        return 0
    lo, hi = SPEED_OCTAVES
    return int(min(max(math.floor(math.log2(ratio) + 0.5), lo), hi))


def _balance_speed(m: dict[str, float]) -> float:
    return m["balancedness_gpu"] + SPEED_WEIGHT * speed_octaves(m)


def _adrs_openevolve(m: dict[str, float]) -> float:
    speed = 0.02 / max(m["runtime_mean_s"], 1e-9)
    return (m["balancedness_expert"] + speed) / 2


def _adrs_leaderboard(m: dict[str, float]) -> float:
    t = max(m["runtime_mean_s"], 1e-9)
    penalty = min(20 * t, 20) if t > 0.010 else 0.0
    return 90 * m["balancedness_gpu"] + 5 * min(0.002 / t, 2) - penalty


SCORERS: dict[str, Scorer] = {
    s.name: s
    for s in (
        Scorer(
            "balance-speed",
            f"balancedness_gpu + {SPEED_WEIGHT} * octaves, octaves = round(log2(speedup_vs_reference)) clamped to "
            f"[{SPEED_OCTAVES[0]}, {SPEED_OCTAVES[1]}], speedup_vs_reference = the reference balancer's median "
            "seconds per call over the candidate's, both timed in the same worker: balance first, and each "
            "doubling of speed over the reference is worth 0.01 of balancedness",
            _balance_speed,
            uses_time=True,
        ),
        Scorer(
            "native",
            "balancedness_gpu (mean over scored windows of sum_l mean GPU load / sum_l max GPU load); "
            "runtime and speed-up versus the reference are reported beside it but do not enter the score, "
            "so a seeded campaign ranks programs identically on every run",
            _native,
            uses_time=False,
        ),
        Scorer(
            "adrs-openevolve",
            "(balancedness_expert + 0.02 / avg_time_s) / 2, balancedness_expert = mean over window pairs of "
            "slot balancedness, avg_time_s = mean seconds per balancer call",
            _adrs_openevolve,
            uses_time=True,
        ),
        Scorer(
            "adrs-leaderboard",
            "90 * balancedness_gpu + 5 * min(0.002 / avg_time_s, 2) - (min(20 * avg_time_s, 20) if "
            "avg_time_s > 0.010 else 0)",
            _adrs_leaderboard,
            uses_time=True,
        ),
    )
}


def get_scorer(name: str) -> Scorer:
    if name not in SCORERS:
        raise UserError(f"unknown scorer '{name}'; choose one of: {', '.join(SCORERS)}")
    return SCORERS[name]


def score_all(metrics: dict[str, float]) -> dict[str, float]:
    """The value of every scorer for one set of metrics."""
    return {name: float(s.fn(metrics)) for name, s in SCORERS.items()}
