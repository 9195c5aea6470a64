"""The `eplb-evolve` command: a thin parser that hands each subcommand to the module that owns it.

Each command module (evolve's own and those of the installed plugins, `evolve.plugins`) exposes
`register(subparsers)`, which adds its subcommands and sets `func` on them. Defaults live in the config
dataclasses; this file only parses. Two conveniences sit here because argparse lacks them: every flag's
help shows its default, and a mistyped flag or command gets a "did you mean" suggestion.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import sys
import unicodedata
from importlib import metadata

from evolve import plugins
from evolve.errors import UserError
from evolve.scrub import scrub


class HelpFormatter(argparse.HelpFormatter):
    """Appends `(default: X)` to a flag's help unless the help already names its default or it has none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (action.option_strings and "default" not in text and default not in (None, False, [], argparse.SUPPRESS)
                and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors suggest the closest command name."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        if "invalid choice:" in message:
            given = message.split("invalid choice:", 1)[1].split("(", 1)[0].strip().strip("'")
            choices = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
            names = list(choices[0].choices) if choices else []
            close = difflib.get_close_matches(given, names, n=1)
            if close:
                message += f"; did you mean '{close[0]}'?"
        super().error(message)


def version() -> str:
    try:
        return metadata.version("eplb-evolve")
    except metadata.PackageNotFoundError:
        return "unknown (not installed; run `pip install -e .`)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="eplb-evolve",
        description="Evolutionary search over MoE expert-parallelism load balancers.",
    )
    parser.add_argument("--version", action="version", version=f"eplb-evolve {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in plugins.command_modules():
        importlib.import_module(name).register(subparsers)
    return parser


def command_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The innermost subcommand parser the words of `argv` name (the main parser when none)."""
    current = parser
    for word in argv:
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if subs and word in subs[0].choices:
            current = subs[0].choices[word]
    return current


def unknown_flag_message(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """One line naming the first unknown flag and the closest flag the command has."""
    flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    word = next((w for w in unknown if w.startswith("-")), unknown[0])
    name = word.split("=", 1)[0]
    close = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f"; see {parser.prog} --help"
    return f"unrecognized argument {word}{hint}"


def one_line(text: str) -> str:
    """An error message as one printable line: a value quoted from a config, a file name or a program may hold
    newlines or terminal escapes; each control or invisible format character is shown as its escape."""
    return "".join(c if unicodedata.category(c) not in ("Cc", "Cf", "Cs") else ascii(c)[1:-1] for c in text)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        sub = command_parser(parser, argv)
        sub.error(unknown_flag_message(sub, unknown))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {one_line(scrub(str(exc)))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is saved", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
