"""`eplb-evolve apply` and `eplb-evolve diff`: the patch engine from the shell.

`apply` turns a reply into a child program (or prints why it cannot); `diff` turns a hand edit into a
patch in the format proposers write, so an edit can be replayed, archived or sent as an example.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from evolve.errors import UserError
from evolve.patch import DEFAULT_ENTRY, PatchError, apply_patch, make_patch


def _read(path: Path) -> str:
    """File text with its line endings untouched (text mode would turn CRLF into LF)."""
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"cannot read {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _write(path: Path, text: str) -> None:
    try:
        path.write_bytes(text.encode("utf-8"))
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def _changed_lines(diff: str) -> tuple[int, int]:
    added = sum(1 for line in diff.split("\n") if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in diff.split("\n") if line.startswith("-") and not line.startswith("---"))
    return added, removed


def run_apply(args: argparse.Namespace) -> int:
    """Apply PATCH to PROGRAM; the child goes to -o (or stdout), the summary to stdout (or stderr)."""
    reply, parent = _read(args.patch), _read(args.program)
    try:
        child = apply_patch(parent, reply, entry_function=args.entry or None)
    except PatchError as exc:
        for err in exc.errors:
            if err is not exc.errors[0]:
                print(str(err), file=sys.stderr)
            if err.detail:
                print(err.detail, file=sys.stderr)
        raise
    report = sys.stdout if args.output else sys.stderr
    added, removed = _changed_lines(child.diff)
    what = f"patch {child.name!r}" if child.name else "patch"
    target = f" -> {args.output}" if args.output else ""
    print(f"applied {what} to {args.program}: +{added} -{removed} lines{target}", file=report)
    for note in child.notes:
        print(f"  note: {note}", file=report)
    if args.show_diff:
        print(child.diff, end="", file=report)
    if args.output:
        _write(args.output, child.code)
    else:
        sys.stdout.write(child.code)
    return 0


def run_diff(args: argparse.Namespace) -> int:
    """Write a patch (NAME / DESCRIPTION / DIFF) that turns OLD into NEW."""
    old, new = _read(args.old), _read(args.new)
    name = args.name or re.sub(r"\W+", "_", args.new.stem).strip("_") or "manual_edit"
    description = args.description or f"Turns {args.old.name} into {args.new.name}."
    text = make_patch(old, new, name=name, description=description)
    try:
        apply_patch(old, text, entry_function=None)
    except PatchError as exc:  # e.g. an edit of frozen code: `apply` and every campaign would refuse it
        if exc.kind == "outside-evolve-block" and not args.force:
            raise UserError(f"{args.new} changes frozen code of {args.old} (outside its EVOLVE-BLOCK markers), so "
                            f"`apply` would reject the patch: {exc}; move the edit inside a block, or pass --force "
                            "to write it anyway") from None
        if not args.force:
            raise UserError(f"the patch from {args.old} to {args.new} would not apply: {exc}; pass --force to "
                            "write it anyway") from None
        print(f"warning: written although `apply` will reject it: {exc}", file=sys.stderr)
    if args.output:
        _write(args.output, text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `apply` and `diff` subcommands."""
    apply = subparsers.add_parser(
        "apply",
        help="apply a patch (a proposer's reply) to a program",
        description="Apply SEARCH/REPLACE blocks or a full rewrite to PROGRAM. Each SEARCH must match exactly "
        "one place; code outside EVOLVE blocks stays frozen; the child must compile and keep the entry function.",
    )
    apply.add_argument("patch", type=Path, metavar="PATCH.txt", help="the reply text holding the patch")
    apply.add_argument("program", type=Path, metavar="PROGRAM.py", help="the parent program")
    apply.add_argument("-o", "--output", type=Path, metavar="CHILD.py", help="write the child here (default: stdout)")
    apply.add_argument(
        "--entry", default=DEFAULT_ENTRY, help=f"function the child must define (default: {DEFAULT_ENTRY}; '' to skip)"
    )
    apply.add_argument("--diff", dest="show_diff", action="store_true", help="also print the unified diff")
    apply.set_defaults(func=run_apply)

    diff = subparsers.add_parser(
        "diff",
        help="turn a hand edit (OLD -> NEW) into a patch",
        description="Write a NAME / DESCRIPTION / DIFF patch whose SEARCH blocks are the smallest that match once. "
        "The patch is checked against A.py as `apply` would check it: an edit of frozen code (outside the "
        "EVOLVE-BLOCK markers) is refused unless --force.",
    )
    diff.add_argument("old", type=Path, metavar="A.py", help="the program before the edit")
    diff.add_argument("new", type=Path, metavar="B.py", help="the program after the edit")
    diff.add_argument("-o", "--output", type=Path, metavar="PATCH.txt", help="write the patch here (default: stdout)")
    diff.add_argument("--name", help="patch name (default: from B's file name)")
    diff.add_argument("--description", help="patch description (default: 'Turns A.py into B.py.')")
    diff.add_argument("--force", action="store_true",
                      help="write the patch even when `apply` would reject it (an edit of frozen code)")
    diff.set_defaults(func=run_diff)
