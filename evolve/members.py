"""Per-member results of a task that scores every program on several data sets (a suite) at once.

Such a task reports each member's numbers in the result's metrics under `suite/<member>/<metric>`, and
each member's scores under `suite/<member>/score:<scorer>`; its own scores are an aggregate of them. These
helpers read the members back for `show` and the report, knowing nothing of the problem.
"""
from __future__ import annotations

from typing import Any

from evolve.archive import Archive
from evolve.task import Result

PREFIX = "suite/"
SCORE_KEY = "score:"


def members_of(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """Member label -> {metric: value}, in the order the metrics name them (prefix removed)."""
    found: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith(PREFIX):
            label, _, metric = key[len(PREFIX):].rpartition("/")
            if label:
                found.setdefault(label, {})[metric] = value
    return found


def member_rows(seed: Result | None, best: Result | None, scorer: str,
                metric: str = "") -> list[dict[str, Any]]:
    """One row per member: its score under `scorer` (and `metric`, when given) for seed and best; empty when
    neither result has members."""
    sides = {name: members_of(r.metrics) if r is not None and r.correct else {}
             for name, r in (("seed", seed), ("best", best))}
    labels = list(dict.fromkeys([*sides["seed"], *sides["best"]]))
    rows = []
    for label in labels:
        row: dict[str, Any] = {"member": label}
        for side in ("seed", "best"):
            values = sides[side].get(label, {})
            row[side] = values.get(SCORE_KEY + scorer)
            if metric:
                row[f"{side} {metric}"] = values.get(metric)
        row["change"] = row["best"] - row["seed"] if row["best"] is not None and row["seed"] is not None else None
        rows.append(row)
    return rows


def member_lines(rows: list[dict[str, Any]], scorer: str, aggregate: tuple[Any, Any] | None = None) -> list[str]:
    """The rows as an aligned text table; `aggregate` (seed, best) adds the suite's own score last."""
    if not rows:
        return []
    width = max(9, *(len(r["member"]) for r in rows))
    extra = [k for k in rows[0] if k not in ("member", "seed", "best", "change")]

    def num(value: Any, sign: str = "") -> str:
        return f"{value:>{sign}10.4f}" if isinstance(value, (int, float)) else f"{'-':>10}"

    head = f"  {'member'.ljust(width)} {'seed':>10} {'best':>10} {'change':>10}" + "".join(
        f" {k[-22:]:>22}" for k in extra)
    lines = [f"per member ({scorer}):", head]
    for r in rows:
        lines.append(f"  {r['member'].ljust(width)} {num(r['seed'])} {num(r['best'])} {num(r['change'], '+')}"
                     + "".join(f" {num(r[k]):>22}" for k in extra))
    if aggregate is not None:
        seed, best = aggregate
        change = best - seed if isinstance(seed, (int, float)) and isinstance(best, (int, float)) else None
        lines.append(f"  {'aggregate'.ljust(width)} {num(seed)} {num(best)} {num(change, '+')}")
    return lines


def archive_lines(archive: Archive) -> list[str]:
    """`show`'s per-member table of the run's seed and best program; empty for a run without members."""
    seed_id = next((s.program_id for s in archive.steps() if s.kind == "seed"), None)
    versions = archive.versions()
    best_id = versions[-1]["program_id"] if versions else seed_id
    seed = archive.result(seed_id) if seed_id else None
    best = archive.result(best_id) if best_id else None
    scorer = next((r.scorer for r in (best, seed) if r is not None and r.scorer), "")
    rows = member_rows(seed, best, scorer)
    return member_lines(rows, scorer, (seed.score if seed else None, best.score if best else None))
