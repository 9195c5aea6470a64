"""The EPLB side of the Python API: score a balancer, compare balancers, with the CLI's checks and defaults.

    from evaluator import evaluate_program, compare_programs

Options are the task options of `eplb-evolve evaluate` (`dataset`, `split`, `protocol`, `window`,
`max_windows`, `scorer`, `device`, `num_replicas`, ...; see `evaluator.task.EvalOptions`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from evaluator.results import compare as cmp
from evaluator.results import leaderboard as lb
from evaluator.task import EplbTask, EvalOptions
from evolve.errors import UserError
from evolve.task import Result


def program_text(program: str | Path) -> str:
    """Code from a .py path or a candidate name in candidates/; text with a newline is the code itself."""
    if isinstance(program, str) and "\n" in program:
        return program
    return lb.discover([str(program)])[0].code


def evaluate_program(program: str | Path, **options: Any) -> Result:
    """Score one balancer (a file, a candidate name, or code) as `eplb-evolve evaluate` does.

    Returns the `evolve.task.Result`: `correct`, `error`, `metrics`, `scores` (every scorer), `per_window`,
    and the stamps (`evaluator_version`, `dataset`). A bad program is `correct=False`, never an exception."""
    return EplbTask(EvalOptions.from_dict(options)).evaluate(program_text(program))


def compare_programs(programs: Sequence[str | Path], datasets: Sequence[str] = ("deepseek-v3",),
                     splits: Sequence[str] = ("holdout",), metric: str = "balancedness_gpu",
                     bootstrap_seed: int = 0, resamples: int = 10000, **options: Any) -> cmp.CompareReport:
    """Each program after the first against the first, on the same windows, as `eplb-evolve compare` does.

    `programs` are candidate names or .py paths, the baseline first. The report holds, per pair, the mean
    difference of `metric` with a bootstrap 95% interval, the win rate and the runtime ratio, pooled
    and per dataset; `evaluator.results.compare.format_report(report)` prints it as the CLI does."""
    if len(programs) < 2:
        raise UserError("compare_programs needs at least two programs: the baseline first, then the others")
    if resamples < 100:
        raise UserError(f"resamples must be at least 100 for a 95% interval, got {resamples}")
    EvalOptions.from_dict(options)  # a bad option fails before any work
    chosen = lb.discover([str(p) for p in programs])
    stamps, results = cmp.evaluate_all(chosen, list(datasets), list(splits), options)
    comparisons = cmp.compare_results([p.name for p in chosen], results, metric, bootstrap_seed, resamples)
    return cmp.CompareReport(metric, bootstrap_seed, resamples, stamps, comparisons)
