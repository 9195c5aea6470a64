"""Shared by bench_cascade.py and bench_search.py: run a short seeded EPLB campaign and read its archive."""
from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evolve import campaign_cli  # noqa: E402
from evolve.config import Config  # noqa: E402

# What `make run` searched before the mutator's cost cap: the same objective (balance-speed) over the whole
# catalogue, slow entries included. (The catalogue itself is today's: its loop-free entries got faster
# since, which flatters these old defaults.)
OLD_DEFAULTS: dict[str, Any] = {"proposer.options.max_cost": 2}


@dataclass
class Step:
    idx: int
    kind: str
    program_id: str | None
    parent_id: str | None
    correct: bool
    score: float | None
    metrics: dict[str, float]
    error: str
    evaluated_at: float  # seconds since the campaign's first evaluation


@dataclass
class Run:
    seconds: float
    steps: list[Step]
    run_dir: Path

    @property
    def evaluated(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "evaluated"]


def run_campaign(seed: int, evaluations: int, overrides: dict[str, Any], root: Path | None = None,
                 dataset: str = "deepseek-v3") -> Run:
    """One campaign of `evaluations` children with the current defaults plus `overrides` (dotted keys)."""
    root = root or Path(tempfile.mkdtemp(prefix="eplb-bench-"))
    config = Config()
    config.campaign.seed = seed
    config.campaign.max_evaluations = evaluations
    config.campaign.max_minutes = 0
    config.campaign.progress = False
    config.campaign.seed_program = str(REPO / "candidates" / "seed.py")
    config.task.options = {"dataset": dataset}
    for key, value in overrides.items():
        config.set(key, value)
    name = f"seed{seed}-{abs(hash(tuple(sorted(map(str, overrides.items()))))) % 10**6}"
    config.campaign.out = str(root / name)
    started = time.perf_counter()
    campaign_cli.run_campaign(config, Path(config.campaign.out), False, holdout=False)
    seconds = time.perf_counter() - started
    return Run(seconds, read_steps(Path(config.campaign.out) / "archive.sqlite"), Path(config.campaign.out))


def read_steps(path: Path) -> list[Step]:
    import json

    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT s.idx, s.kind, s.program_id, s.parent_id, r.correct, r.score, r.metrics, r.error, r.evaluated_at "
            "FROM steps s LEFT JOIN results r ON r.program_id = s.program_id ORDER BY s.idx").fetchall()
    first = min((r[8] for r in rows if r[8] is not None), default=0.0)
    return [Step(idx, kind, pid, parent, bool(correct), score, json.loads(metrics or "{}"), error or "",
                 (at or first) - first)
            for idx, kind, pid, parent, correct, score, metrics, error, at in rows]


def read_program(run: Run, program_id: str | None) -> str:
    """The code of one archived program of `run`."""
    with sqlite3.connect(run.run_dir / "archive.sqlite") as conn:
        row = conn.execute("SELECT code FROM programs WHERE id = ?", (program_id,)).fetchone()
    return row[0] if row else ""
