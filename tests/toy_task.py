"""A toy problem and a toy proposer for the search's tests; they show that `evolve/` knows nothing of EPLB.

Programs define `solve() -> list[float]` (four numbers); the score is minus the squared distance to a
hidden target. The proposer nudges one number of its parent, and now and then fails, breaks the
program, or repeats it, all decided by `request.seed`, so it is deterministic.
Configs name them by file: `tests/toy_task.py:make_task` and `tests/toy_task.py:make_proposer`.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import random
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from evolve.config import Config
from evolve.errors import UserError
from evolve.proposers.base import Proposal, ProposalRequest
from evolve.task import Objective, Result, TaskBase

HERE = Path(__file__).resolve()
TARGETS = {"search": [1.5, -2.0, 3.25, 0.5], "holdout": [1.25, -2.0, 3.5, 0.75]}
SEED = 'def solve():\n    """Start far from the target."""\n    return [0.0, 0.0, 0.0, 0.0]\n'
TASK_OPTIONS = {"split", "delay", "raise_on"}


class ToyTask(TaskBase):
    """Declares a holdout split (the optional features it lacks keep `TaskBase`'s defaults)."""

    name = "toy"
    entry_function = "solve"

    def __init__(self, options: dict[str, Any]) -> None:
        unknown = set(options) - TASK_OPTIONS
        if unknown:
            raise UserError(f"unknown task option '{sorted(unknown)[0]}'; known: {', '.join(sorted(TASK_OPTIONS))}")
        self.options = dict(options)
        self.split = options.get("split", "search")
        if self.split not in TARGETS:
            raise UserError(f"task option 'split' must be search or holdout, got {self.split!r}")
        self.target = TARGETS[self.split]
        self.delay = float(options.get("delay", 0.0))
        self.evaluated = 0

    def holdout(self) -> "ToyTask | None":
        return ToyTask({**self.options, "split": "holdout"}) if self.split != "holdout" else None

    def problem_statement(self) -> str:
        return "Define solve() returning four floats as close as possible to a hidden target."

    def objectives(self) -> list[Objective]:
        return [
            Objective("score"),
            Objective("size", maximise=False),
            Objective("runtime_s", maximise=False, deterministic=False),
        ]

    def stamp(self) -> dict[str, Any]:
        sha = hashlib.sha256(json.dumps(self.target).encode()).hexdigest()
        return {"evaluator_version": "toy-1", "dataset": {"name": "toy", "split": self.split, "sha256": sha},
                "scorer": "score"}

    def evaluate(self, program_text: str) -> Result:
        if self.options.get("raise_on") and self.options["raise_on"] in program_text:
            raise RuntimeError("toy evaluator bug")  # a task bug, as opposed to a bad program
        time.sleep(random.random() * self.delay)  # unseeded on purpose: completion order varies between runs
        self.evaluated += 1
        namespace: dict[str, Any] = {}
        try:
            exec(compile(program_text, "<program>", "exec"), namespace)
            values = namespace["solve"]()
        except Exception as exc:
            return Result.failure(f"{type(exc).__name__}: {exc}", **self.stamp())
        if not (isinstance(values, list) and len(values) == 4 and all(isinstance(v, (int, float)) for v in values)):
            return Result.failure("solve() must return a list of four numbers", **self.stamp())
        score = -sum((v - t) ** 2 for v, t in zip(values, self.target))
        metrics = {"size": sum(abs(v) for v in values), "runtime_s": 1e-4 * (1 + len(program_text) % 7)}
        return Result(correct=True, metrics=metrics, scores={"score": score}, feedback=f"distance {-score:.4f}",
                      **self.stamp())


class ToyProposer:
    """Nudges one number of the parent by a step drawn from `request.seed`."""

    name = "toy"

    def __init__(self, options: dict[str, Any]) -> None:
        self.fail = float(options.get("fail", 0.1))
        self.broken = float(options.get("broken", 0.1))
        self.repeat = float(options.get("repeat", 0.1))
        self.cost = float(options.get("cost", 0.0))
        self.exhaust_after = int(options.get("exhaust_after", 0))
        self.user_error_after = int(options.get("user_error_after", 0))
        self.fail_after = int(options.get("fail_after", 0))
        self.calls = 0

    def propose(self, request: ProposalRequest) -> Proposal:
        self.calls += 1
        if self.user_error_after and self.calls > self.user_error_after:
            raise UserError("transcript has no reply for generation 3 (prompt 1234abcd)")
        rng = random.Random(request.seed)
        parent = request.parent.code
        meta = {"proposer": "toy", "model": "toy-1", "tokens_in": 100, "tokens_out": 20, "cost": self.cost,
                "extra": {"budget_exhausted": bool(self.exhaust_after and self.calls >= self.exhaust_after)}}
        roll = rng.random()
        if roll < self.fail or (self.fail_after and self.calls > self.fail_after):
            return Proposal(error="SEARCH block 1 does not match the parent", **meta)
        if roll < self.fail + self.broken:
            child, name = parent.replace("    return", "    raise ValueError('broken')\n    return", 1), "break"
        elif roll < self.fail + self.broken + self.repeat:
            child, name = parent.replace('"""', '"""Same code, new words. ', 1), "reword"
        else:
            numbers = list(re.finditer(r"-?\d+\.\d+", parent))
            match = numbers[rng.randrange(len(numbers))]
            step = rng.choice([-1.0, -0.5, -0.25, 0.25, 0.5, 1.0])
            child = parent[: match.start()] + repr(float(match.group()) + step) + parent[match.end():]
            name = f"nudge_{numbers.index(match)}_{step:+g}"
        diff = "".join(difflib.unified_diff(parent.splitlines(True), child.splitlines(True), "parent", "child"))
        return Proposal(patch_text=diff, child_code=child, name=name, description=f"toy edit {name}", diff=diff, **meta)


def make_task(options: dict[str, Any]) -> ToyTask:
    return ToyTask(options)


def make_proposer(config: Config, run_dir: Path) -> ToyProposer:
    return ToyProposer(config.proposer.options)


# ---- helpers for the tests -------------------------------------------------------------------------------
def toy_config(tmp: Path, name: str = "run", **campaign: Any) -> Config:
    """A config running the toy problem from a seed written under `tmp`."""
    seed = tmp / "seed.py"
    seed.write_text(SEED)
    config = Config()
    config.update({
        "campaign": {"seed": 7, "max_evaluations": 30, "max_minutes": 0.0, "workers": 1, "islands": 2,
                     "migration_interval": 5, "elite_size": 4, "seed_program": str(seed), "out": str(tmp / name),
                     "progress": False, **campaign},
        "proposer": {"kind": f"{HERE}:make_proposer"},
        "task": {"factory": f"{HERE}:make_task"},
    })
    return config


def fingerprint(archive_path: Path) -> dict[str, Any]:
    """What two equal campaigns share: programs, lineage, scores, steps, versions, islands (no timings)."""
    with sqlite3.connect(archive_path) as conn:
        programs = conn.execute(
            "SELECT p.id, p.parent_id, p.island, p.generation, p.patch_name, p.inspirations, r.correct, r.score "
            "FROM programs p JOIN results r ON r.program_id = p.id ORDER BY p.id").fetchall()
        steps = conn.execute(
            "SELECT idx, kind, program_id, parent_id, island, error, seed FROM steps ORDER BY idx").fetchall()
        versions = conn.execute("SELECT version, program_id, score, idx FROM versions ORDER BY version").fetchall()
        members = conn.execute(
            "SELECT island, program_id, idx, via FROM members ORDER BY island, program_id").fetchall()
    return {"programs": programs, "steps": steps, "versions": versions, "members": members}
