"""Applying a patch to a parent: the checked child, or a `PatchError` saying precisely why not."""
from __future__ import annotations

import difflib
import dis
from dataclasses import dataclass, field
from types import CodeType

from evolve.patch.blocks import marker_pairs, splice_rewrite
from evolve.patch.edit import Edit
from evolve.patch.errors import PatchError
from evolve.patch.parse import Patch, parse_patch
from evolve.patch.text import join_lines, normalize, quote, split_lines

DEFAULT_ENTRY = "rebalance_experts"


@dataclass
class Child:
    """The applied patch: the child program, its unified diff against the parent, and what was done."""

    code: str
    diff: str
    name: str
    description: str
    notes: list[str] = field(default_factory=list)


def _binds(code: CodeType, name: str) -> bool:
    """Whether module-level code binds `name` (def, class, assignment or import, also inside if/try).

    Read from the compiled module's bytecode: compiling is the check we run anyway, and it is cheaper
    than building an AST for a few hundred lines.
    """
    return any(ins.opname == "STORE_NAME" and ins.argval == name for ins in dis.get_instructions(code))


def _blame(origin: list[int] | None, line: int) -> tuple[str, int | None]:
    """Which block wrote (or sits next to) a 1-based line of the child."""
    if not origin:
        return "", None
    i = min(max(line - 1, 0), len(origin) - 1)
    if origin[i] < 0:
        return f" (written by block {-origin[i]})", -origin[i]
    for d in range(1, 4):
        for j in (i - d, i + d):
            if 0 <= j < len(origin) and origin[j] < 0:
                return f" (next to lines written by block {-origin[j]})", -origin[j]
    return f" (parent line {origin[i] + 1}, unchanged)", None


def _check_python(text: str, entry: str | None, origin: list[int] | None, parent: str) -> None:
    """Reject a child that does not compile or no longer defines the entry function.

    `origin` (None for a full rewrite) maps child lines to the blocks that wrote them, for blame.
    """
    lines = text.split("\n")
    subject = "the rewritten program" if origin is None else "the patched program"
    try:
        code = compile(text, "<child>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        line = exc.lineno or 0
        who, block = _blame(origin, line)
        source = quote(lines[line - 1]) if 0 < line <= len(lines) else "end of file"
        try:
            compile(parent, "<parent>", "exec", dont_inherit=True)
            also = ""
        except (SyntaxError, ValueError):
            also = "; the parent does not compile either"
        raise PatchError(
            "syntax",
            f"{subject} is not valid Python: line {line}{who}: {exc.msg} ({source}){also}; fix "
            + ("the REPLACE text there" if origin is not None else "the program and send all of it"),
            block=block,
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise PatchError("syntax", f"{subject} cannot be compiled: {exc}") from None
    if entry and not _binds(code, entry):
        hint = (
            "keep its definition"
            if origin is not None
            else "a reply without SEARCH/REPLACE blocks is read as the complete program, so send all of it"
        )
        raise PatchError(
            "missing-entry",
            f"{subject} does not define `{entry}` at module level; the evaluator calls it: {hint}",
        )


def apply_patch(
    parent_code: str,
    patch: Patch | str,
    entry_function: str | None = DEFAULT_ENTRY,
    *,
    check_python: bool = True,
) -> Child:
    """Apply a reply (or a parsed Patch) to the parent; raise PatchError unless the child is sound.

    `entry_function` None or "" skips the entry check; `check_python=False` skips compiling the child
    (for patching non-Python text). EVOLVE-block rules and exact-match rules always hold.
    """
    if isinstance(patch, str):
        patch = parse_patch(patch)
    parent_text, crlf = normalize(parent_code)
    parent_lines, final = split_lines(parent_text)
    final = final or not parent_lines  # an empty parent takes the patch's own final newline
    try:
        pairs = marker_pairs(parent_lines)
    except PatchError as exc:
        raise PatchError("markers", f"the parent's EVOLVE-BLOCK markers are broken: {exc}; fix them first") from None
    notes = list(patch.notes)
    if "\r\n" in parent_code and not crlf:
        notes.append("the parent mixes CRLF and LF line endings; the child uses LF throughout")
    origin: list[int] | None = None
    if patch.full_code is not None:
        lines, more = splice_rewrite(parent_lines, pairs, patch.full_code)
        final = True  # a rewrite always ends with a newline
        notes.extend(more)
    else:
        if not patch.blocks:
            raise PatchError("no-patch", "the patch holds no SEARCH/REPLACE block and no full program")
        edit = Edit(parent_lines, pairs)
        edit.run(patch.blocks)
        lines, origin = edit.lines, edit.origin
        notes.extend(edit.notes)
    child_text = join_lines(lines, final)
    if child_text == parent_text:
        rewrite = patch.full_code is not None
        what = "the rewrite is identical to the parent" if rewrite else "every SEARCH equals its REPLACE"
        raise PatchError("no-change", f"the patch changes nothing: {what}; change the code you mean to improve")
    if check_python:
        _check_python(child_text, entry_function, origin, parent_text)
    diff = "\n".join(difflib.unified_diff(parent_lines, lines, "parent", "child", lineterm=""))
    if crlf:
        child_text = child_text.replace("\n", "\r\n")
    return Child(child_text, diff + "\n" if diff else "", patch.name, patch.description, notes)
