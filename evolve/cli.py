"""The `eplb-evolve` command: a thin parser that hands each subcommand to the module that owns it.

Each module in `COMMAND_MODULES` exposes `register(subparsers)`, which adds its subcommands and sets
`func` on them. Defaults live in the config dataclasses; this file only parses.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from evolve.errors import UserError
from evolve.scrub import scrub

COMMAND_MODULES = [
    "evaluator.traces.cli",
    "evaluator.evaluate_cli",
    "evolve.patch_cli",
    "evolve.campaign_cli",
    "evaluator.results.cli",
    "evolve.ui.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eplb-evolve",
        description="Evolutionary search over MoE expert-parallelism load balancers.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {scrub(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is saved", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
