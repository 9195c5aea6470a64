"""`eplb-evolve report RUN`: figures and a self-contained report.html for any run, drawn from its archive.

The archive alone gives the progress and lineage figures and the summary, whatever the task. An
application adds the rest through a `ReportExtension` its plugin declares (`evolve.plugins`): flags of
its own, the metrics its figures plot (balance against runtime, a per-window metric), and sections
that need its evaluator (a leaderboard, runtimes measured again, the other data splits).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from evolve import plugins
from evolve.loading import load_object

RESULTS = Path("results")


@dataclass
class ReportExtras:
    """What an application adds to a run's report. Empty keys leave their figure out; `sources` are
    lines saying where the extra numbers came from."""

    balance_key: str = ""  # a metric drawn against `runtime_key` (the Pareto figure)
    runtime_key: str = ""
    window_key: str = ""  # a key of `Result.per_window` drawn per window, best against seed
    references: list[Any] = field(default_factory=list)  # evolve.report.Reference
    table: Any = None  # a pandas DataFrame shown as the leaderboard
    note: str = ""
    timing: Any = None  # evolve.report.Timing: runtimes measured for the report
    splits: list[Any] = field(default_factory=list)  # evolve.report.SplitResults
    summary_rows: list[tuple[str, str]] = field(default_factory=list)  # (label, text) added to the summary
    summary_data: dict[str, Any] = field(default_factory=dict)  # the same in numbers, summary.json's "standing"
    sources: list[str] = field(default_factory=list)


class ReportExtension(Protocol):
    """An application's part of `report`; a plugin names one in `Plugin.report_extension`."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the application's own flags to `report`."""
        ...

    def extras(self, run: Any, args: argparse.Namespace) -> ReportExtras | None:
        """The additions for `run` (an `evolve.report.RunView`); None when the run is not this
        application's. With `args.no_evaluate` it evaluates nothing."""
        ...


def extensions() -> list[ReportExtension]:
    return [load_object(p.report_extension, what=f"plugin {p.name} report_extension")
            for p in plugins.installed() if p.report_extension]


def register(subparsers: argparse._SubParsersAction) -> None:
    rep = subparsers.add_parser("report", help="figures and a self-contained report.html for a run")
    rep.add_argument("run", metavar="RUN", help="run directory, or its name under results/")
    rep.add_argument("--no-evaluate", action="store_true",
                     help="evaluate nothing: figures from the archive only, no leaderboard rows")
    rep.add_argument("--out", metavar="DIR", help="where the report goes (default: RUN/report)")
    rep.add_argument("--results", default=str(RESULTS), metavar="DIR", help="where run names are looked up")
    for extension in extensions():
        extension.add_arguments(rep)
    rep.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from evolve import report

    run_dir = report.resolve_run(args.run, Path(args.results))
    run = report.load_run(run_dir)
    extras = next((found for ext in extensions() if (found := ext.extras(run, args)) is not None), ReportExtras())
    files = report.build_report(run_dir, extras.balance_key, extras.runtime_key, extras.window_key,
                                extras.references, extras.table, extras.note, Path(args.out) if args.out else None,
                                timing=extras.timing, splits=extras.splits, extra_rows=extras.summary_rows,
                                extra_data=extras.summary_data)
    if extras.summary_rows:
        print("\n".join(f"{label}: {text}" for label, text in extras.summary_rows))
    print("\n".join([f"run from {run_dir.resolve()}", *extras.sources]))
    print(f"report: {files.html.resolve()}")
    for path in files.figures.values():
        print(f"figure: {path}")
    return 0
