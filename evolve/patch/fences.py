"""Code fences in a reply: finding them, and reading one program out of them."""
from __future__ import annotations

import re
from dataclasses import dataclass

from evolve import syntax
from evolve.patch.errors import PatchError
from evolve.patch.text import block_text

_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_PYTHON_INFO = {"", "python", "py", "python3", "py3"}


@dataclass
class _Fence:
    """A fenced code block of a reply; `content` holds its lines without the fence lines."""

    info: str
    start: int  # 0-based index of the opening fence line
    content: list[str]

    @property
    def python(self) -> bool:
        """Whether the info string says python, or nothing (a bare fence holds code too)."""
        return (self.info.split()[0].lower() if self.info.split() else "") in _PYTHON_INFO


def fence(line: str) -> tuple[str, int, str] | None:
    """(fence character, length, info string) for a fence line, else None."""
    match = _FENCE_RE.match(line)
    if not match:
        return None
    run, info = match.group(1), match.group(2).strip()
    if run[0] == "`" and "`" in info:
        return None
    return run[0], len(run), info


def _closes(line: str, char: str, size: int) -> bool:
    """Whether `line` closes a fence opened with `size` times `char`: as long or longer, no info string."""
    found = fence(line)
    return found is not None and found[0] == char and found[1] >= size and not found[2]


def _fences(lines: list[str]) -> tuple[list[_Fence], _Fence | None]:
    """Closed fenced blocks, and the fence left open at the end of the text (if any)."""
    out: list[_Fence] = []
    i = 0
    while i < len(lines):
        found = fence(lines[i])
        if not found:
            i += 1
            continue
        char, size, info = found
        j = i + 1
        while j < len(lines) and not _closes(lines[j], char, size):
            j += 1
        if j == len(lines):
            return out, _Fence(info, i, lines[i + 1 :])
        out.append(_Fence(info, i, lines[i + 1 : j]))
        i = j + 1
    return out, None


def unfence(lines: list[str]) -> tuple[list[str], bool]:
    """Drop a leading opening fence and a trailing closing fence line (code never starts with ```)."""
    out, changed = list(lines), False
    if out and fence(out[0]) is not None:
        out, changed = out[1:], True
    if out:
        found = fence(out[-1])
        if found is not None and not found[2]:
            out, changed = out[:-1], True
    return out, changed


def program_from_fences(lines: list[str], where: str, offset: int = 0) -> tuple[str | None, list[str]]:
    """One program from fenced code, or None when there is none. Raise when it is unclear or cut off."""
    fences, open_fence = _fences(lines)
    python = [f for f in fences if f.python]
    notes: list[str] = []
    if len(python) == 1 and (open_fence is None or not open_fence.python):
        return block_text(python[0].content), notes
    candidates = python + ([open_fence] if open_fence is not None and open_fence.python else [])
    if candidates:
        # Fence lines inside the code (a docstring with ``` examples) split one program into pieces:
        # take everything from the first python fence to the last bare closing fence if that parses.
        first = min(f.start for f in candidates)
        closers = [i for i in range(len(lines) - 1, first, -1) if (f := fence(lines[i])) and not f[2]]
        if closers:
            span = lines[first + 1 : closers[0]]
            try:
                syntax.parse(block_text(span))
            except (SyntaxError, ValueError):
                pass
            else:
                notes.append(f"took the code between the first and the last fence line of {where}, as one program")
                return block_text(span), notes
    if open_fence is not None and open_fence.python:
        raise PatchError(
            "truncated",
            f"the code fence opened at reply line {offset + open_fence.start + 1} ({where}) is never closed: the reply "
            "looks cut off; send the whole program again",
        )
    if len(python) > 1:
        raise PatchError(
            "malformed",
            f"{where} has {len(python)} python code fences and no SEARCH/REPLACE block; send one complete program "
            "in one ```python fence, or SEARCH/REPLACE blocks",
        )
    return None, notes
