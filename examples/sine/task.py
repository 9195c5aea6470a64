"""A small non-EPLB problem for evolve: approximate sin(x) on [0, pi/2] with a short program.

A program defines `approximate(x) -> float`. The task calls it on a fixed grid of points and scores the
number of correct decimal digits, -log10(max |approximate(x) - sin(x)|): higher is better, and the same
program always gets the same score. The `search` split uses one grid, the `holdout` split the points
in between, so the campaign's closing holdout line checks the search did not overfit its grid.

Each program runs in a fresh Python process (isolated mode, a time limit, no state shared with the
harness), because a program is untrusted text. This is much lighter than the EPLB sandbox: it does
not cap memory or block files and sockets, so only run proposals you are willing to execute.

Use it from a config as `task.factory = "examples/sine/task.py:make_task"`; see docs/new-task.md.
"""
from __future__ import annotations

import ast
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from evolve.errors import UserError
from evolve.task import Objective, Result, TaskBase

VERSION = "sine-1"  # bump when a change could alter any score
POINTS = 64
SPLITS = ("search", "holdout")
OPTIONS = {"split": "search", "timeout_s": 10.0}

# Runs in the child process: read {"code", "xs"} on stdin, print the values as the last line of stdout.
RUNNER = """
import json, sys
job = json.loads(sys.stdin.read())
namespace = {"__name__": "program"}
exec(compile(job["code"], "<program>", "exec"), namespace)
values = [float(namespace["approximate"](x)) for x in job["xs"]]
print(json.dumps(values))
"""


def grid(split: str) -> list[float]:
    """Search: POINTS evenly spaced points from 0 to pi/2; holdout: the midpoints between them."""
    step = (math.pi / 2) / (POINTS - 1)
    if split == "search":
        return [i * step for i in range(POINTS)]
    return [(i + 0.5) * step for i in range(POINTS - 1)]


def forbidden(program_text: str) -> str:
    """One line naming the first construct the problem rules out (imports would allow math.sin), or ''."""
    try:
        tree = ast.parse(program_text)
    except SyntaxError as exc:
        return f"the program does not parse: {exc.msg} (line {exc.lineno})"
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return f"line {node.lineno}: imports are not allowed; use arithmetic only"
        if isinstance(node, ast.Name) and node.id in ("__import__", "eval", "exec", "open"):
            return f"line {node.lineno}: '{node.id}' is not allowed; use arithmetic only"
    return ""


class SineTask(TaskBase):
    """Implements `evolve.task.Task`: the search only ever calls these methods. From `TaskBase` it takes
    the defaults of the optional features it does not offer (a mutation catalogue)."""

    name = "sine"
    entry_function = "approximate"

    def __init__(self, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise UserError(f"unknown task option '{unknown[0]}'; known: {', '.join(OPTIONS)}")
        self.options = {**OPTIONS, **options}
        if self.options["split"] not in SPLITS:
            raise UserError(f"task option 'split' must be search or holdout, got {self.options['split']!r}")
        self.xs = grid(self.options["split"])

    def seed_program(self) -> str:
        """The seed next to this file: a campaign starts from it unless campaign.seed_program names another."""
        return str(Path(__file__).resolve().with_name("seed.py"))

    def holdout(self) -> "SineTask":
        """The points between the search grid's: the campaign scores best and seed on them at the end."""
        return SineTask({**self.options, "split": "holdout"})

    def problem_statement(self) -> str:
        return ("Define approximate(x) -> float that approximates sin(x) for x in [0, pi/2] using only "
                "arithmetic (no math.sin). Score: correct decimal digits, -log10 of the largest absolute "
                f"error over {POINTS} grid points. Higher is better.")

    def objectives(self) -> list[Objective]:
        return [Objective("digits"), Objective("max_error", maximise=False)]

    def stamp(self) -> dict[str, Any]:
        sha = hashlib.sha256(json.dumps(self.xs).encode()).hexdigest()
        return {"evaluator_version": VERSION, "scorer": "digits",
                "dataset": {"name": "sine-grid", "split": self.options["split"], "sha256": sha}}

    def evaluate(self, program_text: str) -> Result:
        stamp = self.stamp()
        problem = forbidden(program_text)
        if problem:
            return Result.failure(problem, **stamp)
        try:
            proc = subprocess.run([sys.executable, "-I", "-c", RUNNER], input=json.dumps(
                {"code": program_text, "xs": self.xs}), capture_output=True, text=True,
                timeout=float(self.options["timeout_s"]))
        except subprocess.TimeoutExpired:
            return Result.failure(f"the program ran longer than {self.options['timeout_s']} s", **stamp)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["exited with status %d" % proc.returncode])[-1]
            return Result.failure(last, **stamp, stderr=proc.stderr[-2000:])
        try:
            values = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            values = None
        if not (isinstance(values, list) and len(values) == len(self.xs)
                and all(isinstance(v, float) and math.isfinite(v) for v in values)):
            return Result.failure("approximate(x) must return a finite number for every x (and not print)", **stamp)
        errors = [abs(v - math.sin(x)) for v, x in zip(values, self.xs)]
        worst = max(errors)
        digits = -math.log10(max(worst, 1e-16))
        at = self.xs[errors.index(worst)]
        return Result(correct=True, metrics={"max_error": worst, "mean_error": sum(errors) / len(errors)},
                      scores={"digits": digits}, feedback=f"largest error {worst:.3g} at x = {at:.4f}",
                      per_window=[{"x": x, "error": e} for x, e in zip(self.xs, errors)], **stamp)


def make_task(options: dict[str, Any]) -> SineTask:
    """The factory a config names; it validates the options."""
    return SineTask(dict(options))
