"""The EPLB evaluator as an `evolve` plugin: its commands, its task, and the `run` flags for that task.

Named in `pyproject.toml` under `[project.entry-points."evolve.plugins"]`; `evolve.plugins` reads it.
Kept free of heavy imports (torch), since every `eplb-evolve` command line reads it."""
from __future__ import annotations

from evolve.plugins import Plugin, TaskFlag

PLUGIN = Plugin(
    name="eplb",
    first_commands=("evaluator.traces.cli", "evaluator.evaluate_cli"),
    commands=("evaluator.results.cli",),
    task_factory="evaluator.task:make_task",
    report_extension="evaluator.results.cli:REPORT",
    task_flags=(
        TaskFlag("--dataset", "dataset", "task option: dataset name or trace file (default: the task's)", "NAME"),
        TaskFlag("--scorer", "scorer", "task option: scorer (default: the task's)", "NAME"),
        TaskFlag("--suite", "suite", "task option: score on several datasets, NAME:SPLIT,... (docs/campaigns.md)",
                 "LIST"),
        TaskFlag("--suite-aggregate", "suite_aggregate", "task option: a suite's score, mean or worst", "HOW"),
    ),
)
