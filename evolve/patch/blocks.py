"""EVOLVE blocks: the ``# EVOLVE-BLOCK-START`` / ``# EVOLVE-BLOCK-END`` markers and the frozen code around them.

The code outside the blocks, markers included, is the frame a patch must leave byte for byte as it
was; `splice_rewrite` holds a full rewrite to that frame.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from evolve.patch.errors import PatchError
from evolve.patch.text import block_text, clip, normalize, quote, split_lines


@dataclass
class EvolveBlock:
    """A region a search may rewrite. Line numbers are 1-based and point at the marker lines."""

    label: str
    start_line: int
    end_line: int
    body: str


START_RE = re.compile(r"^\s*#\s*EVOLVE-BLOCK-START(?:[\s:]+(.*?))?\s*$")
END_RE = re.compile(r"^\s*#\s*EVOLVE-BLOCK-END\b.*$")


def marker_pairs(lines: list[str]) -> list[tuple[int, int, str]]:
    """(start index, end index, label) of each EVOLVE block; raise "markers" when unbalanced."""
    pairs: list[tuple[int, int, str]] = []
    open_at, label = -1, ""
    for i, line in enumerate(lines):
        if "EVOLVE-BLOCK" not in line:
            continue
        start = START_RE.match(line)
        if start:
            if open_at >= 0:
                raise PatchError(
                    "markers",
                    f"line {i + 1}: '# EVOLVE-BLOCK-START' inside the block opened at line {open_at + 1} "
                    "(blocks do not nest)",
                )
            open_at, label = i, (start.group(1) or "").strip()
        elif END_RE.match(line):
            if open_at < 0:
                raise PatchError("markers", f"line {i + 1}: '# EVOLVE-BLOCK-END' without an open block")
            pairs.append((open_at, i, label))
            open_at = -1
    if open_at >= 0:
        raise PatchError("markers", f"line {open_at + 1}: '# EVOLVE-BLOCK-START' is never closed")
    return pairs


def marker_lines(lines: list[str]) -> list[str]:
    """The marker lines among `lines`, quoted: a block must keep them as they are."""
    return [repr(line.strip()) for line in lines if START_RE.match(line) or END_RE.match(line)]


def evolve_blocks(code: str) -> list[EvolveBlock]:
    """The EVOLVE blocks of a program, in order; an empty list when it has no markers."""
    lines = code.split("\n")
    return [
        EvolveBlock(label, s + 1, e + 1, block_text(lines[s + 1 : e]))
        for s, e, label in marker_pairs(lines)
    ]


def frozen_frame(lines: list[str], pairs: list[tuple[int, int, str]]) -> list[tuple[int, str]]:
    """(index, text) of every line outside the block bodies; marker lines are frozen too."""
    out: list[tuple[int, str]] = []
    prev = 0
    for start, end, _ in pairs:
        out.extend((i, lines[i]) for i in range(prev, start + 1))
        prev = end
    out.extend((i, lines[i]) for i in range(prev, len(lines)))
    return out


def first_change(old: list[tuple[int, str]], new: list[tuple[int, str]], rewrite: bool = False) -> str:
    """What the first difference between two frozen frames does, in the parent's line numbers."""
    matcher = difflib.SequenceMatcher(None, [t for _, t in old], [t for _, t in new], autojunk=False)
    tag, i1, i2, j1, j2 = next(op for op in matcher.get_opcodes() if op[0] != "equal")
    if tag == "insert":
        where = f"before line {old[i1][0] + 1}" if i1 < len(old) else f"after line {old[-1][0] + 1}" if old else ""
        also = f" (rewrite line {new[j1][0] + 1})" if rewrite else ""
        return f"adds {quote(new[j1][1])}{also} {where}".rstrip()
    if tag == "delete":
        return f"deletes line {old[i1][0] + 1} ({quote(old[i1][1])})"
    became = f", became rewrite line {new[j1][0] + 1}: {quote(new[j1][1])}" if rewrite else ""
    return f"changes line {old[i1][0] + 1} ({quote(old[i1][1])}{became})"


def frozen_diff(old: list[tuple[int, str]], new: list[tuple[int, str]]) -> str:
    """A diff of the code outside the EVOLVE blocks, headed by real parent line numbers."""
    old_text, new_text = [t for _, t in old], [t for _, t in new]
    out: list[str] = ["--- parent, outside the EVOLVE blocks", "+++ child, outside the EVOLVE blocks"]
    matcher = difflib.SequenceMatcher(None, old_text, new_text, autojunk=False)
    for group in matcher.get_grouped_opcodes(1):
        first = group[0][1]
        out.append(f"@@ parent line {old[first][0] + 1} @@" if first < len(old) else "@@ end of the parent @@")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out.extend(" " + t for t in old_text[i1:i2])
            else:
                out.extend("-" + t for t in old_text[i1:i2])
                out.extend("+" + t for t in new_text[j1:j2])
    return clip(out)


def _cosmetic(line: str) -> str | None:
    """A frozen line as it matters for splicing: None for blank and comment lines; markers without labels."""
    text = line.rstrip()
    if not text.strip():
        return None
    if START_RE.match(text):
        return "# EVOLVE-BLOCK-START"
    if END_RE.match(text):
        return "# EVOLVE-BLOCK-END"
    if text.lstrip().startswith("#"):
        return None
    return text


def splice_rewrite(parent: list[str], pairs: list[tuple[int, int, str]], code: str) -> tuple[list[str], list[str]]:
    """Lines of a full rewrite, kept to the parent's frozen frame, and notes (see `evolve.patch`).

    A rewrite differing from the frame only in blank lines, comments, labels or trailing whitespace
    gets its block bodies spliced into the parent's frame; any other difference is rejected, since
    dropping a real frozen change silently would hand the evaluator a program nobody wrote.
    """
    lines, _ = split_lines(normalize(code)[0])
    if not pairs:
        return lines, []
    try:
        new_pairs = marker_pairs(lines)
    except PatchError as exc:
        raise PatchError(
            "outside-evolve-block",
            f"the rewrite's EVOLVE-BLOCK markers are broken ({exc}); keep every marker line of the parent",
        ) from None
    old_frozen, new_frozen = frozen_frame(parent, pairs), frozen_frame(lines, new_pairs)
    if [t for _, t in old_frozen] == [t for _, t in new_frozen]:
        return lines, []
    keep = "keep the code outside the EVOLVE blocks as it is, or send SEARCH/REPLACE blocks"
    if len(new_pairs) != len(pairs):
        raise PatchError(
            "outside-evolve-block",
            f"the rewrite has {len(new_pairs)} EVOLVE blocks where the parent has {len(pairs)}; keep every "
            f"'# EVOLVE-BLOCK-START' / '# EVOLVE-BLOCK-END' pair and {keep}",
        )
    old_norm = [(i, c) for i, t in old_frozen if (c := _cosmetic(t)) is not None]
    new_norm = [(i, c) for i, t in new_frozen if (c := _cosmetic(t)) is not None]
    if [c for _, c in old_norm] != [c for _, c in new_norm]:
        what = first_change(old_norm, new_norm, rewrite=True)
        raise PatchError(
            "outside-evolve-block",
            f"the rewrite {what}, outside the EVOLVE blocks; {keep}",
            detail=frozen_diff(old_frozen, new_frozen),
        )
    out: list[str] = []
    prev = 0
    for (start, end, _), (new_start, new_end, _) in zip(pairs, new_pairs):
        out.extend(parent[prev : start + 1])
        out.extend(lines[new_start + 1 : new_end])
        prev = end
    out.extend(parent[prev:])
    note = (
        "full rewrite: took the bodies of its EVOLVE blocks and kept the parent's code outside them "
        "(the rewrite differed there only in blank lines, comments or trailing spaces)"
    )
    return out, [note]
