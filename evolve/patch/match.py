"""Finding a SEARCH text in the program: exactly, up to whitespace, or the closest region for a message.

Matching works on lines. A tolerant match allows trailing whitespace and one uniform indentation
shift, described as ("add" | "del", whitespace); `reindent` moves the REPLACE lines by the same shift.
"""
from __future__ import annotations

import difflib
from collections import Counter, defaultdict

from evolve.patch.errors import PatchError
from evolve.patch.text import describe_ws, quote


def find_exact(lines: list[str], search: list[str], limit: int = 0) -> list[int]:
    """Start indices where `search` occurs as whole lines (stop after `limit` hits when limit > 0)."""
    hits: list[int] = []
    n, first, last = len(search), search[0], len(lines) - len(search)
    i = 0
    while i <= last:
        try:
            i = lines.index(first, i, last + 1)
        except ValueError:
            break
        if lines[i : i + n] == search:
            hits.append(i)
            if limit and len(hits) >= limit:
                break
        i += 1
    return hits


def _shift_at(lines: list[str], at: int, search: list[str]) -> tuple[str, str] | None:
    """("add" | "del", whitespace) making `search` equal lines[at:] up to trailing whitespace, else None."""
    shift: tuple[str, str] | None = None
    for s_line, t_line in zip(search, lines[at : at + len(search)]):
        s_text, t_text = s_line.rstrip(), t_line.rstrip()
        if not s_text or not t_text:
            if s_text or t_text:
                return None
            continue
        s_body, t_body = s_text.lstrip(), t_text.lstrip()
        if s_body != t_body:
            return None
        s_ws, t_ws = s_text[: len(s_text) - len(s_body)], t_text[: len(t_text) - len(t_body)]
        if shift is None:
            if t_ws.endswith(s_ws):
                shift = ("add", t_ws[: len(t_ws) - len(s_ws)])
            elif s_ws.endswith(t_ws):
                shift = ("del", s_ws[: len(s_ws) - len(t_ws)])
            else:
                return None
        op, ws = shift
        if (op == "add" and t_ws != ws + s_ws) or (op == "del" and s_ws != ws + t_ws):
            return None
    return shift or ("add", "")


def find_loose(lines: list[str], search: list[str]) -> list[tuple[int, tuple[str, str]]]:
    """Places matching up to trailing whitespace and one uniform indentation shift."""
    anchor = next((j for j, line in enumerate(search) if line.strip()), -1)
    key = search[anchor].strip() if anchor >= 0 else ""
    hits = []
    for i in range(len(lines) - len(search) + 1):
        if anchor >= 0 and lines[i + anchor].strip() != key:
            continue
        shift = _shift_at(lines, i, search)
        if shift is not None:
            hits.append((i, shift))
    return hits


def closest(lines: list[str], search: list[str]) -> tuple[int, int, int] | None:
    """The window of the program most like `search`, and how many SEARCH lines appear in it.

    Lines shared with the program vote for an offset and the best cluster of offsets wins; when too
    few lines are shared, the first SEARCH lines are compared fuzzily (a one-character typo).
    """
    code = [line.strip() for line in search if line.strip()]
    if not lines or not code:
        return None
    where: dict[str, list[int]] = defaultdict(list)
    for i, line in enumerate(lines):
        if line.strip():
            where[line.strip()].append(i)
    votes: Counter[int] = Counter()
    for j, line in enumerate(search):
        hits = where.get(line.strip(), []) if line.strip() else []
        if 0 < len(hits) <= 20:
            for i in hits:
                votes[i - j] += 1
    offset: int | None = None
    if votes:
        best = max(sorted(votes), key=lambda o: sum(votes.get(o + d, 0) for d in range(-3, 4)))
        if sum(votes.get(best + d, 0) for d in range(-3, 4)) * 4 >= len(code):
            offset = best
    if offset is None:
        best_ratio = 0.75
        for j in [j for j, line in enumerate(search) if line.strip()][:3]:
            key = search[j].strip()
            for i, line in enumerate(lines):
                text = line.strip()
                if abs(len(text) - len(key)) > len(key) // 4 + 1:
                    continue
                matcher = difflib.SequenceMatcher(None, key, text)
                if matcher.quick_ratio() > best_ratio and matcher.ratio() > best_ratio:
                    best_ratio, offset = matcher.ratio(), i - j
    if offset is None:
        return None
    start, end = max(0, offset), min(len(lines), offset + len(search))
    if start >= end:
        return None
    window = [line.strip() for line in lines[start:end] if line.strip()]
    same = sum(size for _, _, size in difflib.SequenceMatcher(None, code, window, autojunk=False).get_matching_blocks())
    return start, end, same


def reindent(replace: list[str], shift: tuple[str, str], block: int, where: str) -> list[str]:
    """REPLACE lines moved by the shift its SEARCH needed; raise "reindent" when a line cannot move that far."""
    op, ws = shift
    if not ws:
        return replace
    out: list[str] = []
    for no, line in enumerate(replace, 1):
        if not line.strip():
            out.append(line)
        elif op == "add":
            out.append(ws + line)
        elif line.startswith(ws):
            out.append(line[len(ws) :])
        else:
            raise PatchError(
                "reindent",
                f"block {block} matches {where} only with {describe_ws(ws)} less indentation, but REPLACE line "
                f"{no} ({quote(line)}) is indented less than that; copy the SEARCH lines with the program's "
                "exact indentation",
                block=block,
            )
    return out
