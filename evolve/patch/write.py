"""Writing a patch: the NAME / DESCRIPTION / DIFF text that turns one program into another."""
from __future__ import annotations

import difflib
import re

from evolve.patch.edit import Edit
from evolve.patch.errors import PatchError
from evolve.patch.match import find_exact
from evolve.patch.parse import parse_patch
from evolve.patch.text import block_text, join_lines, normalize, split_lines

_MERGE_GAP = 2  # hunks this close become one block: one SEARCH instead of two nearly touching ones


def _hunks(old: list[str], new: list[str]) -> list[tuple[int, int, int, int]]:
    """Changed line ranges (i1, i2, j1, j2) of old and new, with nearly touching ones merged."""
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    hunks: list[tuple[int, int, int, int]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if hunks and i1 - hunks[-1][1] <= _MERGE_GAP:
            hunks[-1] = (hunks[-1][0], i2, hunks[-1][2], j2)
        else:
            hunks.append((i1, i2, j1, j2))
    return hunks


def _blocks_for(old: list[str], new: list[str]) -> list[tuple[list[str], list[str]]] | None:
    """Blocks turning old into new, each SEARCH grown until it matches once where it will apply."""
    work = list(old)
    delta = 0
    blocks: list[tuple[list[str], list[str]]] = []
    for i1, i2, j1, j2 in _hunks(old, new):
        start, end = i1 + delta, i2 + delta
        before = after = 0
        while True:
            lo, hi = start - before, end + after
            search = work[lo:hi]
            if search and any(line.strip() for line in search) and len(find_exact(work, search, limit=2)) == 1:
                break
            if lo == 0 and hi == len(work):
                if not search:
                    return None
                break
            if (before <= after and lo > 0) or hi == len(work):
                before += 1
            else:
                after += 1
        replace = work[lo:start] + new[j1:j2] + work[end:hi]
        blocks.append((search, replace))
        work[lo:hi] = replace
        delta += (j2 - j1) - (i2 - i1)
    return blocks


def _clean_name(name: str) -> str:
    """A name that cannot close or open a section of the patch it heads."""
    return " ".join(re.sub(r"[<>]", "", name).split()) or "edit"


def _clean_description(description: str) -> str:
    """A description without section tags, which would end it early when the patch is read back."""
    return re.sub(r"</?(?:NAME|DESCRIPTION|DIFF|CODE)>", "", description, flags=re.IGNORECASE).strip() or "-"


def _header(name: str, description: str) -> str:
    return f"<NAME>\n{name}\n</NAME>\n\n<DESCRIPTION>\n{description}\n</DESCRIPTION>\n\n"


def _format_blocks(name: str, description: str, blocks: list[tuple[list[str], list[str]]]) -> str:
    rendered = [
        "<<<<<<< SEARCH\n" + block_text(search) + "=======\n" + block_text(replace) + ">>>>>>> REPLACE\n"
        for search, replace in blocks
    ]
    return _header(name, description) + "<DIFF>\n" + "\n".join(rendered) + "</DIFF>\n"


def _format_rewrite(name: str, description: str, code: str) -> str:
    """A <CODE> patch, its fence longer than any backtick run that opens a line of the code."""
    runs = [len(m.group(1)) for line in code.split("\n") if (m := re.match(r"^ {0,3}(`+)", line))]
    fence = "`" * max([3] + [n + 1 for n in runs])
    body = code if code.endswith("\n") else code + "\n"
    return _header(name, description) + f"<CODE>\n{fence}python\n{body}{fence}\n</CODE>\n"


def make_patch(
    old_code: str,
    new_code: str,
    name: str = "manual_edit",
    description: str = "A hand edit, turned into a patch.",
) -> str:
    """Patch text (NAME / DESCRIPTION / DIFF) that turns old_code into new_code.

    Each SEARCH is the changed lines plus the least context that makes it match exactly once at the
    moment it applies. The result is checked by applying it; when blocks cannot say it (an empty
    program, marker lines inside the code, a change of the final newline) it falls back to <CODE>.
    """
    old, _ = normalize(old_code)
    new, _ = normalize(new_code)
    old_lines, old_final = split_lines(old)
    new_lines, _ = split_lines(new)
    if old == new:
        raise PatchError("no-change", "the two programs are identical; there is nothing to patch")
    name, description = _clean_name(name), _clean_description(description)
    blocks = _blocks_for(old_lines, new_lines) if old_lines else None
    if blocks:
        text = _format_blocks(name, description, blocks)
        try:
            edit = Edit(old_lines, None)
            edit.run(parse_patch(text).blocks)
            if join_lines(edit.lines, old_final) == new:
                return text
        except PatchError:
            pass
    return _format_rewrite(name, description, new)
