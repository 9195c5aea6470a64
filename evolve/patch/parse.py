"""Reading a reply: its name, description, and either SEARCH/REPLACE blocks or one full program."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from evolve.patch.errors import PatchError
from evolve.patch.fences import fence, program_from_fences, unfence
from evolve.patch.text import block_text, first_code_line, normalize, ordinal, quote, split_lines


@dataclass
class SearchReplace:
    """One block. `search`/`replace` are whole lines, each ending in a newline ("" when empty).

    `line` is the reply line of its SEARCH marker. `alternatives` holds other readings of the same
    block as (search, replace, how): other choices of divider when the block holds several ``=======``
    lines, or the block with code fences dropped; `how` says how `search`/`replace` were read ("" for
    a plain block). Applying picks the reading that matches (see `evolve.patch`).
    """

    search: str
    replace: str
    index: int
    line: int = 0
    how: str = ""
    alternatives: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class Patch:
    """A parsed reply: either `blocks` or `full_code` (a whole program) is set."""

    name: str = ""
    description: str = ""
    blocks: list[SearchReplace] = field(default_factory=list)
    full_code: str | None = None
    notes: list[str] = field(default_factory=list)


_SEARCH_RE = re.compile(r"^\s*<{5,9}\s*SEARCH\b.*$", re.IGNORECASE)
_DIVIDER_RE = re.compile(r"^\s*={7}\s*$")
_REPLACE_RE = re.compile(r"^\s*>{5,9}\s*REPLACE\b.*$", re.IGNORECASE)
_SWAPPED_RE = re.compile(r"^\s*(?:<{5,9}\s*REPLACE|>{5,9}\s*SEARCH)\b", re.IGNORECASE)
_DIFF_CLOSE_RE = re.compile(r"^\s*</DIFF>\s*$", re.IGNORECASE)
_SECTION_RES = {
    tag: re.compile(rf"^[ \t]*<{tag}>(.*?)</{tag}>", re.IGNORECASE | re.DOTALL | re.MULTILINE)
    for tag in ("NAME", "DESCRIPTION")
}
_CODE_OPEN_RE = re.compile(r"^[ \t]*<CODE>", re.IGNORECASE | re.MULTILINE)
_CODE_CLOSE_RE = re.compile(r"</CODE>", re.IGNORECASE)


def _readings(index: int, line: int, body: list[str], dividers: list[int]) -> SearchReplace:
    """All readings of one block: each divider choice, with and without inner fence lines."""
    middle = (len(dividers) - 1) // 2
    order = sorted(range(len(dividers)), key=lambda r: (abs(r - middle), r))
    readings: list[tuple[str, str, str]] = []
    for rank in order:
        cut = dividers[rank]
        search, replace = body[:cut], body[cut + 1 :]
        how = f"with the {ordinal(rank + 1)} of {len(dividers)} '=======' lines as the divider"
        plain_search, s_changed = unfence(search)
        plain_replace, r_changed = unfence(replace)
        variants = [(search, replace, how if len(dividers) > 1 else "")]
        if s_changed or r_changed:
            fence_how = "with the code fence lines inside it dropped"
            both = f"{how}, {fence_how}" if len(dividers) > 1 else fence_how
            variants.insert(0, (plain_search, plain_replace, both))
        readings.extend((block_text(s), block_text(r), h) for s, r, h in variants)
    first, rest = readings[0], readings[1:]
    return SearchReplace(first[0], first[1], index, line, first[2], rest)


def _scan_blocks(lines: list[str]) -> list[SearchReplace]:
    """SEARCH/REPLACE blocks in reply lines; raise on broken marker structure (reply lines 1-based)."""
    blocks: list[SearchReplace] = []
    start = -1
    body: list[str] = []
    dividers: list[int] = []
    shape = "a block reads '<<<<<<< SEARCH', the old lines, '=======', the new lines, '>>>>>>> REPLACE'"
    for no, line in enumerate(lines, 1):
        k = len(blocks) + 1
        if start < 0:
            if _SEARCH_RE.match(line):
                start, body, dividers = no, [], []
            elif _REPLACE_RE.match(line):
                raise PatchError(
                    "malformed",
                    f"reply line {no}: '>>>>>>> REPLACE' without an opening '<<<<<<< SEARCH'; {shape}",
                    block=k,
                )
            elif _SWAPPED_RE.match(line):
                raise PatchError(
                    "malformed", f"reply line {no}: {quote(line)} has its markers swapped; {shape}", block=k
                )
            continue
        if _SEARCH_RE.match(line):
            missing = "'>>>>>>> REPLACE'" if dividers else "'=======' and '>>>>>>> REPLACE'"
            raise PatchError(
                "malformed",
                f"block {k} (reply line {start}) has no {missing} before the next '<<<<<<< SEARCH' "
                f"(reply line {no}); {shape}",
                block=k,
            )
        if _REPLACE_RE.match(line):
            if not dividers:
                raise PatchError(
                    "malformed",
                    f"block {k} (reply line {start}) has no '=======' line between SEARCH and REPLACE; {shape}",
                    block=k,
                )
            blocks.append(_readings(k, start, body, dividers))
            start = -1
        elif _SWAPPED_RE.match(line):
            raise PatchError(
                "malformed",
                f"block {k} (reply line {start}): reply line {no} {quote(line)} has its markers swapped; {shape}",
                block=k,
            )
        elif _DIFF_CLOSE_RE.match(line):
            raise PatchError(
                "malformed",
                f"block {k} (reply line {start}) reaches '</DIFF>' (reply line {no}) without '>>>>>>> REPLACE'; "
                f"{shape}",
                block=k,
            )
        else:
            if _DIVIDER_RE.match(line):
                dividers.append(len(body))
            body.append(line)
    if start >= 0:
        raise PatchError(
            "truncated",
            f"block {len(blocks) + 1} (reply line {start}) never reaches '>>>>>>> REPLACE': the reply looks cut off; "
            "send the whole patch again",
            block=len(blocks) + 1,
        )
    return blocks


def _mask(text: str, lines: list[str], match: re.Match[str]) -> None:
    """Blank the lines a section spans, so markers inside prose are never read as blocks."""
    first, last = text.count("\n", 0, match.start()), text.count("\n", 0, match.end())
    for i in range(first, min(last, len(lines) - 1) + 1):
        lines[i] = ""


def parse_patch(text: str) -> Patch:
    """Read a reply: name, description, and either SEARCH/REPLACE blocks or one full program.

    Raises PatchError: "no-patch" (nothing usable), "malformed" (broken markers, both blocks and a
    rewrite, several candidate programs), "truncated" (cut off inside a block or fence).
    """
    text, _ = normalize(text.lstrip("\ufeff"))
    lines, _ = split_lines(text)
    patch = Patch()
    for tag, regex in _SECTION_RES.items():
        match = regex.search(text)
        if match:
            _mask(text, lines, match)
            if tag == "NAME":
                patch.name = " ".join(match.group(1).split())
            else:
                patch.description = match.group(1).strip()
    masked = "\n".join(lines)

    code_open = _CODE_OPEN_RE.search(masked)
    code_lines: list[str] | None = None
    if code_open:
        closes = list(_CODE_CLOSE_RE.finditer(masked, code_open.end()))
        end = closes[-1].start() if closes else len(masked)
        first = masked.count("\n", 0, code_open.start())
        last = masked.count("\n", 0, closes[-1].end()) if closes else len(lines) - 1
        content = masked[code_open.end() : end]
        code_offset = masked.count("\n", 0, code_open.end()) + len(content) - len(content.lstrip("\n"))
        code_lines, _ = split_lines(content.strip("\n") + "\n")
        lines = lines[:first] + [""] * (last - first + 1) + lines[last + 1 :]

    patch.blocks = _scan_blocks(lines)
    if code_lines is not None:
        if patch.blocks:
            raise PatchError(
                "malformed",
                "the reply has both SEARCH/REPLACE blocks and a <CODE> rewrite; send one or the other",
            )
        if fence(first_code_line(code_lines)) is not None:
            code, notes = program_from_fences(code_lines, "the <CODE> section", code_offset)
        else:
            body = list(code_lines)
            while body and not body[0].strip():
                body.pop(0)
            while body and not body[-1].strip():
                body.pop()
            code, notes = (block_text(body) if body else None), []
        if not code or not code.strip():
            raise PatchError("no-patch", "the <CODE> section is empty; put the complete program inside it")
        patch.full_code, patch.notes = code, notes
        return patch
    if patch.blocks:
        return patch
    code, notes = program_from_fences(lines, "the reply")
    if code is None or not code.strip():
        for tag in ("DESCRIPTION", "DIFF", "CODE"):
            opened = re.search(rf"^[ \t]*<{tag}>", text, re.IGNORECASE | re.MULTILINE)
            if opened and not re.search(rf"</{tag}>", text[opened.end() :], re.IGNORECASE):
                line = text.count("\n", 0, opened.start()) + 1
                raise PatchError(
                    "truncated",
                    f"the reply stops inside <{tag}> (opened at reply line {line}) before any patch: it looks cut "
                    "off; send the whole patch again",
                )
        raise PatchError(
            "no-patch",
            "the reply holds no SEARCH/REPLACE block, no <CODE> section and no python code fence; "
            "send '<<<<<<< SEARCH' / '=======' / '>>>>>>> REPLACE' blocks or the complete program",
        )
    patch.full_code, patch.notes = code, notes
    return patch
