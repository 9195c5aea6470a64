"""`eplb-evolve ui [RUN ...]`: browse runs in a web page that follows a campaign while it writes."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evolve.errors import UserError
from evolve.ui.queries import ARCHIVE_NAME, RunSource

RESULTS = Path("results")
DEFAULT_PORT = 8765


def register(subparsers: argparse._SubParsersAction) -> None:
    ui = subparsers.add_parser(
        "ui", help="browse runs in a local web page (live while a campaign writes)",
        description="Serve a read-only web view of one or more runs on 127.0.0.1: program table, genealogy, "
                    "program pages with diffs and transcripts, islands, Pareto view, runs side by side.")
    ui.add_argument("runs", nargs="*", metavar="RUN",
                    help="run directories or names under results/ (default: every run under --root)")
    ui.add_argument("--root", default=str(RESULTS), help="where runs live when none is named (default: results)")
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default 127.0.0.1; anything else exposes your archives to the network)")
    ui.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: a free one)")
    ui.add_argument("--runtime-key", default="", metavar="METRIC", help="runtime-like metric (default: guessed)")
    ui.add_argument("--balance-key", default="", metavar="METRIC", help="balance-like metric (default: guessed)")
    ui.add_argument("--open", action="store_true", help="open the page in the default browser")
    ui.set_defaults(func=cmd_ui)


def resolve_runs(names: list[str], root: Path) -> list[Path]:
    """Run directories from paths or names under `root`; every run under `root` when none is named."""
    if not names:
        runs = sorted(p.parent for p in root.glob(f"*/{ARCHIVE_NAME}")) if root.is_dir() else []
        if not runs:
            raise UserError(f"no runs under {root}/; name a run directory or start one with `eplb-evolve run`")
        return runs
    found = []
    for name in names:
        candidates = [Path(name), root / name]
        if Path(name).name == ARCHIVE_NAME:
            candidates.insert(0, Path(name).parent)
        run = next((c for c in candidates if (c / ARCHIVE_NAME).is_file()), None)
        if run is None:
            raise UserError(f"no run at {name} (no {ARCHIVE_NAME} there or under {root}/); list runs with "
                            "`eplb-evolve runs`")
        found.append(run)
    return found


def make_sources(run_dirs: list[Path], runtime_key: str = "", balance_key: str = "") -> list[RunSource]:
    names: dict[str, int] = {}
    sources = []
    for run_dir in run_dirs:
        name = run_dir.resolve().name
        names[name] = names.get(name, 0) + 1
        source = RunSource(run_dir, name if names[name] == 1 else f"{name} ({names[name]})")
        source.discover_keys(runtime_key, balance_key)
        sources.append(source)
    return sources


def cmd_ui(args: argparse.Namespace) -> int:
    from evolve.ui.server import LOCAL_HOSTS, serve

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a port; give 0-65535 (0 picks a free one)")
    sources = make_sources(resolve_runs(args.runs, Path(args.root)), args.runtime_key, args.balance_key)
    if args.host not in LOCAL_HOSTS:
        print(f"warning: binding {args.host}: anyone who can reach this machine can read these archives "
              "(programs, transcripts); there is no login", file=sys.stderr)
    return serve(sources, args.host, args.port, args.open)
