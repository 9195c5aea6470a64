"""Named evaluation presets: one flag that sets every option a published evaluator fixes.

Why: a published score is only reproduced when shape, groups, window, protocol, split, partial windows
and scorer all match; setting seven flags by hand is how reproductions go wrong. A preset is a set of
`EvalOptions` values; flags given beside it win, and the output names every setting used. What cannot be
reproduced (the timer scope, the machine) is listed in docs/reproduction.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evolve.errors import UserError

# The constants of the published ADRS / OpenEvolve EPLB evaluator (DeepSeek-V3/R1 shape, 58x256).
_ADRS = {
    "split": "",  # the whole trace for an imported trace or file (a bundled dataset: its search split)
    "protocol": "predictive",  # plan on window i, score on window i+1
    "window": 100,
    "partial_window": "score",  # the published loader sums whatever steps remain into a last window
    "max_windows": 0,
    "num_replicas": 288,
    "num_groups": 8,
    "num_nodes": 4,
    "num_gpus": 32,
}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    options: dict[str, Any]
    shape: tuple[int, int] | None = None  # (layers, experts) the published configuration was made for


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "adrs",
            "the ADRS / OpenEvolve EPLB evaluator: whole trace, 100-step windows (a trailing partial one scored), "
            "plan on window i and score on i+1, R=288, 8 groups, 4 nodes, 32 GPUs, "
            "score (mean slot balancedness + 0.02 / avg_time_s) / 2",
            {**_ADRS, "scorer": "adrs-openevolve"},
            (58, 256),
        ),
        Preset(
            "adrs-leaderboard",
            "the same protocol scored as the ADRS leaderboard: 90 * balancedness_gpu + speed term - slowness penalty",
            {**_ADRS, "scorer": "adrs-leaderboard"},
            (58, 256),
        ),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def with_preset(name: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The preset's option values overlaid by `options` (explicit flags win)."""
    if not name:
        return dict(options)
    return {**get_preset(name).options, **options}
