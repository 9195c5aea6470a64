"""Patches: read a proposer's reply, apply it to a parent program exactly, or say precisely why not.

A reply holds either SEARCH/REPLACE blocks or one full program:

- blocks: ``<<<<<<< SEARCH`` / ``=======`` / ``>>>>>>> REPLACE``, inside ``<DIFF>`` sections (with
  ``<NAME>`` and ``<DESCRIPTION>``), inside code fences, or bare; chatter around them is ignored;
- a full rewrite: a ``<CODE>`` section (fenced or not), or a reply whose only code is one python fence.

Blocks apply in order to the evolving text. Each SEARCH must match exactly one place: verbatim first,
then ignoring trailing whitespace and a uniform indentation shift (the REPLACE text is re-indented to
fit). A block that matches nowhere, or in several places, is never skipped and never resolved by
picking the first match: it raises `PatchError`, whose one-line message names the block, its first
SEARCH line and what to do, and whose `detail` shows the closest region of the program as a diff.
Every failing block is reported, so one retry can fix them all.

A block whose lines hold more than one ``=======`` line (a reST underline in a docstring, say) is read
every possible way, and so is a block whose parts are wrapped in code fences inside the markers; the
longest SEARCH that matches exactly one place wins, and a note says so. An empty SEARCH is accepted
only for an empty program. A patch whose child equals its parent is an error, never a silent no-op.

EVOLVE blocks: when the parent has ``# EVOLVE-BLOCK-START [label]`` / ``# EVOLVE-BLOCK-END`` markers,
the code outside them (markers included) is frozen. After each block the frozen lines must be
byte-for-byte those of the parent; SEARCH context may span markers as long as it is kept. A full
rewrite is accepted when its frozen lines equal the parent's. When they differ only in blank lines,
comment lines, block labels or trailing whitespace, the rewrite's block bodies are spliced into the
parent's frozen frame (a note says so). Any other difference, or a different number of blocks,
rejects the rewrite, naming the first differing frozen line: dropping a real frozen change silently
would hand the evaluator a program the proposer did not write.

Finally the child must compile and still define the entry function; otherwise it is rejected before
any evaluation. Line endings follow the parent (CRLF parents get CRLF children).

`make_patch` writes the other direction: a NAME / DESCRIPTION / DIFF patch whose SEARCH parts are the
smallest that match once, checked by applying it (a <CODE> rewrite when blocks cannot say it).
"""
from __future__ import annotations

import ast
import difflib
import dis
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from types import CodeType

from evolve.errors import UserError

DEFAULT_ENTRY = "rebalance_experts"

ERROR_KINDS: dict[str, str] = {
    "no-patch": "the reply holds no SEARCH/REPLACE block and no full program",
    "malformed": "SEARCH/REPLACE markers or sections are out of order or incomplete",
    "truncated": "the reply stops inside a block or a code fence (it was cut off)",
    "empty-search": "a block has an empty SEARCH part",
    "no-match": "a SEARCH text is not in the program",
    "ambiguous": "a SEARCH text is in the program more than once",
    "reindent": "a SEARCH text matches only at another indentation that its REPLACE cannot follow",
    "outside-evolve-block": "the edit changes code outside the EVOLVE blocks",
    "markers": "the parent's EVOLVE-BLOCK markers are unbalanced",
    "no-change": "the child equals the parent",
    "syntax": "the child is not valid Python",
    "missing-entry": "the child no longer defines the entry function",
}


class PatchError(UserError):
    """A reply that cannot become a child. `kind` is a short code from `ERROR_KINDS`; str() is one line.

    `detail` holds multi-line context (closest region as a diff, ambiguous places). When several
    blocks fail, `errors` lists one error per block (the first is this one's) and `feedback()` joins
    them all, ready to send back to the proposer.
    """

    def __init__(self, kind: str, message: str, *, block: int | None = None, detail: str = "") -> None:
        super().__init__(message.replace("\r", " ").replace("\n", " "))
        self.kind = kind
        self.block = block
        self.detail = detail.strip("\n")
        self.errors: list[PatchError] = [self]

    def feedback(self) -> str:
        """Every failure with its detail: the text a proposer needs to fix the patch in one retry."""
        parts: list[str] = []
        for err in self.errors:
            parts.append(str(err))
            if err.detail:
                parts.append(err.detail)
        return "\n\n".join(parts)


@dataclass
class SearchReplace:
    """One block. `search`/`replace` are whole lines, each ending in a newline ("" when empty).

    `line` is the reply line of its SEARCH marker. `alternatives` holds other readings of the same
    block as (search, replace, how): other choices of divider when the block holds several ``=======``
    lines, or the block with code fences dropped; `how` says how `search`/`replace` were read ("" for
    a plain block). Applying picks the reading that matches (see the module docstring).
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


@dataclass
class Child:
    """The applied patch: the child program, its unified diff against the parent, and what was done."""

    code: str
    diff: str
    name: str
    description: str
    notes: list[str] = field(default_factory=list)


@dataclass
class EvolveBlock:
    """A region a search may rewrite. Line numbers are 1-based and point at the marker lines."""

    label: str
    start_line: int
    end_line: int
    body: str


# --------------------------------------------------------------------------------------------------
# Text helpers. Lines are split on "\n" only: str.splitlines also splits on \x0c, \u2028 and friends,
# which can sit inside string literals and must survive a patch untouched.


def _normalize(text: str) -> tuple[str, bool]:
    """LF text, and whether every newline was CRLF (so the child can be written back the same way)."""
    crlf = "\r\n" in text and text.count("\r\n") == text.count("\n")
    return text.replace("\r\n", "\n"), crlf


def _split(text: str) -> tuple[list[str], bool]:
    """Lines without their newline, and whether the text ended with one."""
    if not text:
        return [], False
    final = text.endswith("\n")
    return (text[:-1] if final else text).split("\n"), final


def _join(lines: list[str], final: bool) -> str:
    return "\n".join(lines) + ("\n" if final and lines else "")


def _block_text(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _quote(line: str, width: int = 72) -> str:
    text = line.strip()
    if len(text) > width:
        text = text[: width - 3] + "..."
    return repr(text)


def _first_code_line(lines: list[str]) -> str:
    return next((line for line in lines if line.strip()), lines[0] if lines else "")


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _and_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _describe_ws(ws: str) -> str:
    tabs, spaces = ws.count("\t"), ws.count(" ")
    parts = [f"{tabs} tab{'s' * (tabs != 1)}"] if tabs else []
    if spaces or not parts:
        parts.append(f"{spaces} space{'s' * (spaces != 1)}")
    return " and ".join(parts)


# --------------------------------------------------------------------------------------------------
# Parsing.

_SEARCH_RE = re.compile(r"^\s*<{5,9}\s*SEARCH\b.*$", re.IGNORECASE)
_DIVIDER_RE = re.compile(r"^\s*={7}\s*$")
_REPLACE_RE = re.compile(r"^\s*>{5,9}\s*REPLACE\b.*$", re.IGNORECASE)
_SWAPPED_RE = re.compile(r"^\s*(?:<{5,9}\s*REPLACE|>{5,9}\s*SEARCH)\b", re.IGNORECASE)
_DIFF_CLOSE_RE = re.compile(r"^\s*</DIFF>\s*$", re.IGNORECASE)
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_PYTHON_INFO = {"", "python", "py", "python3", "py3"}
_SECTION_RES = {
    tag: re.compile(rf"^[ \t]*<{tag}>(.*?)</{tag}>", re.IGNORECASE | re.DOTALL | re.MULTILINE)
    for tag in ("NAME", "DESCRIPTION")
}
_CODE_OPEN_RE = re.compile(r"^[ \t]*<CODE>", re.IGNORECASE | re.MULTILINE)
_CODE_CLOSE_RE = re.compile(r"</CODE>", re.IGNORECASE)


@dataclass
class _Fence:
    info: str
    start: int  # 0-based index of the opening fence line
    end: int  # 0-based index of the closing fence line, -1 when never closed
    content: list[str]

    @property
    def python(self) -> bool:
        return (self.info.split()[0].lower() if self.info.split() else "") in _PYTHON_INFO


def _fence(line: str) -> tuple[str, int, str] | None:
    """(fence character, length, info string) for a fence line, else None."""
    match = _FENCE_RE.match(line)
    if not match:
        return None
    run, info = match.group(1), match.group(2).strip()
    if run[0] == "`" and "`" in info:
        return None
    return run[0], len(run), info


def _closes(line: str, char: str, size: int) -> bool:
    found = _fence(line)
    return found is not None and found[0] == char and found[1] >= size and not found[2]


def _fences(lines: list[str]) -> tuple[list[_Fence], _Fence | None]:
    """Closed fenced blocks, and the fence left open at the end of the text (if any)."""
    out: list[_Fence] = []
    i = 0
    while i < len(lines):
        found = _fence(lines[i])
        if not found:
            i += 1
            continue
        char, size, info = found
        j = i + 1
        while j < len(lines) and not _closes(lines[j], char, size):
            j += 1
        if j == len(lines):
            return out, _Fence(info, i, -1, lines[i + 1 :])
        out.append(_Fence(info, i, j, lines[i + 1 : j]))
        i = j + 1
    return out, None


def _unfence(lines: list[str]) -> tuple[list[str], bool]:
    """Drop a leading opening fence and a trailing closing fence line (code never starts with ```)."""
    out, changed = list(lines), False
    if out and _fence(out[0]) is not None:
        out, changed = out[1:], True
    if out:
        found = _fence(out[-1])
        if found is not None and not found[2]:
            out, changed = out[:-1], True
    return out, changed


def _readings(index: int, body: list[str], dividers: list[int]) -> SearchReplace:
    """All readings of one block: each divider choice, with and without inner fence lines."""
    middle = (len(dividers) - 1) // 2
    order = sorted(range(len(dividers)), key=lambda r: (abs(r - middle), r))
    readings: list[tuple[str, str, str]] = []
    for rank in order:
        cut = dividers[rank]
        search, replace = body[:cut], body[cut + 1 :]
        how = f"with the {_ordinal(rank + 1)} of {len(dividers)} '=======' lines as the divider"
        plain_search, s_changed = _unfence(search)
        plain_replace, r_changed = _unfence(replace)
        variants = [(search, replace, how if len(dividers) > 1 else "")]
        if s_changed or r_changed:
            fence_how = "with the code fence lines inside it dropped"
            both = f"{how}, {fence_how}" if len(dividers) > 1 else fence_how
            variants.insert(0, (plain_search, plain_replace, both))
        readings.extend((_block_text(s), _block_text(r), h) for s, r, h in variants)
    first, rest = readings[0], readings[1:]
    return SearchReplace(first[0], first[1], index, 0, first[2], rest)


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
                    "malformed", f"reply line {no}: {_quote(line)} has its markers swapped; {shape}", block=k
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
            block = _readings(k, body, dividers)
            block.line = start
            blocks.append(block)
            start = -1
        elif _SWAPPED_RE.match(line):
            raise PatchError(
                "malformed",
                f"block {k} (reply line {start}): reply line {no} {_quote(line)} has its markers swapped; {shape}",
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


def _program_from_fences(lines: list[str], where: str, offset: int = 0) -> tuple[str | None, list[str]]:
    """One program from fenced code, or None when there is none. Raise when it is unclear or cut off."""
    fences, open_fence = _fences(lines)
    python = [f for f in fences if f.python]
    notes: list[str] = []
    if len(python) == 1 and (open_fence is None or not open_fence.python):
        return _block_text(python[0].content), notes
    candidates = python + ([open_fence] if open_fence is not None and open_fence.python else [])
    if candidates:
        # Fence lines inside the code (a docstring with ``` examples) split one program into pieces:
        # take everything from the first python fence to the last bare closing fence if that parses.
        first = min(f.start for f in candidates)
        closers = [i for i in range(len(lines) - 1, first, -1) if (f := _fence(lines[i])) and not f[2]]
        if closers:
            span = lines[first + 1 : closers[0]]
            try:
                ast.parse(_block_text(span))
            except (SyntaxError, ValueError):
                pass
            else:
                notes.append(f"took the code between the first and the last fence line of {where}, as one program")
                return _block_text(span), notes
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


def parse_patch(text: str) -> Patch:
    """Read a reply: name, description, and either SEARCH/REPLACE blocks or one full program.

    Raises PatchError: "no-patch" (nothing usable), "malformed" (broken markers, both blocks and a
    rewrite, several candidate programs), "truncated" (cut off inside a block or fence).
    """
    text, _ = _normalize(text.lstrip("\ufeff"))
    lines, _ = _split(text)
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
        code_lines, _ = _split(content.strip("\n") + "\n")
        lines = lines[:first] + [""] * (last - first + 1) + lines[last + 1 :]

    patch.blocks = _scan_blocks(lines)
    if code_lines is not None:
        if patch.blocks:
            raise PatchError(
                "malformed",
                "the reply has both SEARCH/REPLACE blocks and a <CODE> rewrite; send one or the other",
            )
        if _fence(_first_code_line(code_lines)) is not None:
            code, notes = _program_from_fences(code_lines, "the <CODE> section", code_offset)
        else:
            body = list(code_lines)
            while body and not body[0].strip():
                body.pop(0)
            while body and not body[-1].strip():
                body.pop()
            code, notes = (_block_text(body) if body else None), []
        if not code or not code.strip():
            raise PatchError("no-patch", "the <CODE> section is empty; put the complete program inside it")
        patch.full_code, patch.notes = code, notes
        return patch
    if patch.blocks:
        return patch
    code, notes = _program_from_fences(lines, "the reply")
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


# --------------------------------------------------------------------------------------------------
# EVOLVE blocks.

_START_RE = re.compile(r"^\s*#\s*EVOLVE-BLOCK-START(?:[\s:]+(.*?))?\s*$")
_END_RE = re.compile(r"^\s*#\s*EVOLVE-BLOCK-END\b.*$")


def _marker_pairs(lines: list[str]) -> list[tuple[int, int, str]]:
    """(start index, end index, label) of each EVOLVE block; raise "markers" when unbalanced."""
    pairs: list[tuple[int, int, str]] = []
    open_at, label = -1, ""
    for i, line in enumerate(lines):
        if "EVOLVE-BLOCK" not in line:
            continue
        start = _START_RE.match(line)
        if start:
            if open_at >= 0:
                raise PatchError(
                    "markers",
                    f"line {i + 1}: '# EVOLVE-BLOCK-START' inside the block opened at line {open_at + 1} "
                    "(blocks do not nest)",
                )
            open_at, label = i, (start.group(1) or "").strip()
        elif _END_RE.match(line):
            if open_at < 0:
                raise PatchError("markers", f"line {i + 1}: '# EVOLVE-BLOCK-END' without an open block")
            pairs.append((open_at, i, label))
            open_at = -1
    if open_at >= 0:
        raise PatchError("markers", f"line {open_at + 1}: '# EVOLVE-BLOCK-START' is never closed")
    return pairs


def _marker_lines(lines: list[str]) -> list[str]:
    return [repr(line.strip()) for line in lines if _START_RE.match(line) or _END_RE.match(line)]


def evolve_blocks(code: str) -> list[EvolveBlock]:
    """The EVOLVE blocks of a program, in order; an empty list when it has no markers."""
    lines = code.split("\n")
    return [
        EvolveBlock(label, s + 1, e + 1, "".join(line + "\n" for line in lines[s + 1 : e]))
        for s, e, label in _marker_pairs(lines)
    ]


def _frozen(lines: list[str], pairs: list[tuple[int, int, str]]) -> list[tuple[int, str]]:
    """(index, text) of every line outside the block bodies; marker lines are frozen too."""
    out: list[tuple[int, str]] = []
    prev = 0
    for start, end, _ in pairs:
        out.extend((i, lines[i]) for i in range(prev, start + 1))
        prev = end
    out.extend((i, lines[i]) for i in range(prev, len(lines)))
    return out


def _first_change(old: list[tuple[int, str]], new: list[tuple[int, str]], rewrite: bool = False) -> str:
    """What the first difference between two frozen frames does, in the parent's line numbers."""
    matcher = difflib.SequenceMatcher(None, [t for _, t in old], [t for _, t in new], autojunk=False)
    tag, i1, i2, j1, j2 = next(op for op in matcher.get_opcodes() if op[0] != "equal")
    if tag == "insert":
        where = f"before line {old[i1][0] + 1}" if i1 < len(old) else f"after line {old[-1][0] + 1}" if old else ""
        also = f" (rewrite line {new[j1][0] + 1})" if rewrite else ""
        return f"adds {_quote(new[j1][1])}{also} {where}".rstrip()
    if tag == "delete":
        return f"deletes line {old[i1][0] + 1} ({_quote(old[i1][1])})"
    became = f", became rewrite line {new[j1][0] + 1}: {_quote(new[j1][1])}" if rewrite else ""
    return f"changes line {old[i1][0] + 1} ({_quote(old[i1][1])}{became})"


def _frozen_diff(old: list[tuple[int, str]], new: list[tuple[int, str]]) -> str:
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
    return "\n".join(out[:40] + ([f"... ({len(out) - 40} more lines)"] if len(out) > 40 else []))


# --------------------------------------------------------------------------------------------------
# Matching.


def _find_exact(lines: list[str], search: list[str], limit: int = 0) -> list[int]:
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


def _find_loose(lines: list[str], search: list[str]) -> list[tuple[int, tuple[str, str]]]:
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


def _closest(lines: list[str], search: list[str]) -> tuple[int, int, int] | None:
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


def _reindent(replace: list[str], shift: tuple[str, str], block: int, where: str) -> list[str]:
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
                f"block {block} matches {where} only with {_describe_ws(ws)} less indentation, but REPLACE line "
                f"{no} ({_quote(line)}) is indented less than that; copy the SEARCH lines with the program's "
                "exact indentation",
                block=block,
            )
    return out


# --------------------------------------------------------------------------------------------------
# Applying.


class _Edit:
    """The evolving program while blocks apply: its lines, where each line came from, the frozen frame.

    `origin[i]` is the parent index of line i, or -k for a line written by block k; messages use it to
    speak in the parent's line numbers, which are the ones the proposer saw.
    """

    def __init__(self, parent: list[str], pairs: list[tuple[int, int, str]] | None) -> None:
        self.parent = parent
        self.lines = list(parent)
        self.origin = list(range(len(parent)))
        self.replaced_by: dict[int, int] = {}
        self.frozen = _frozen(parent, pairs) if pairs else None
        self.notes: list[str] = []

    def run(self, blocks: list[SearchReplace]) -> None:
        """Apply every block in order; a failing block is left out and reported with all the others."""
        errors: list[PatchError] = []
        for block in blocks:
            try:
                self._apply(block)
            except PatchError as exc:
                errors.append(exc)
        if errors:
            raise _combine(errors)

    # -- one block ---------------------------------------------------------------------------------

    def _apply(self, block: SearchReplace) -> None:
        k = block.index
        readings = [(block.search, block.replace, block.how)] + list(block.alternatives)
        parsed = [(_split(s)[0], _split(r)[0], how) for s, r, how in readings]
        if not parsed[0][0]:
            if not self.lines and len(parsed) == 1:
                self._replace(0, 0, parsed[0][1], k)
                return
            if all(not search for search, _, _ in parsed):
                raise PatchError(
                    "empty-search",
                    f"block {k} has an empty SEARCH part; to add code, SEARCH for the line(s) just before the "
                    "insertion point and repeat them at the top of REPLACE",
                    block=k,
                )
        pos, size, new, notes = self._locate(k, [p for p in parsed if p[0]])
        old = self.lines[pos : pos + size]
        where = f"its SEARCH matched {self._span(pos, pos + size)}"
        if self.frozen is not None:
            markers_old, markers_new = _marker_lines(old), _marker_lines(new)
            if markers_old != markers_new:
                raise PatchError(
                    "outside-evolve-block",
                    f"block {k} changes EVOLVE-BLOCK marker lines ({where}; SEARCH has "
                    f"{_and_list(markers_old or ['none'])}, REPLACE has {_and_list(markers_new or ['none'])}); keep "
                    "every '# EVOLVE-BLOCK-START' and '# EVOLVE-BLOCK-END' line as it is",
                    block=k,
                )
        undo = (list(self.lines), list(self.origin), dict(self.replaced_by))
        self._replace(pos, size, new, k)
        if self.frozen is not None:
            try:
                self._check_frame(k, where)
            except PatchError:
                self.lines, self.origin, self.replaced_by = undo
                raise
        self.notes.extend(notes)
        if old == new:
            self.notes.append(f"block {k} changes nothing (its SEARCH equals its REPLACE)")

    def _locate(
        self, k: int, readings: list[tuple[list[str], list[str], str]]
    ) -> tuple[int, int, list[str], list[str]]:
        """Where the block goes: (index, lines replaced, new lines, notes). Raise when not exactly one place."""
        exact = [(s, r, how, _find_exact(self.lines, s)) for s, r, how in readings]
        unique = [item for item in exact if len(item[3]) == 1]
        if unique:
            search, replace, how, hits = max(unique, key=lambda item: len(item[0]))
            return hits[0], len(search), replace, [f"block {k}: read {how}"] if how else []
        several = [item for item in exact if len(item[3]) > 1]
        if several:
            search, _, _, hits = several[0]
            raise self._ambiguous(k, search, hits, "")
        loose = [(s, r, how, _find_loose(self.lines, s)) for s, r, how in readings]
        unique_loose = [item for item in loose if len(item[3]) == 1]
        if unique_loose:
            search, replace, how, hits = max(unique_loose, key=lambda item: len(item[0]))
            pos, shift = hits[0]
            where = f"line {self._line_no(pos)}"
            notes = [f"block {k}: read {how}"] if how else []
            if shift[1]:
                sign = "+" if shift[0] == "add" else "-"
                notes.append(f"block {k} matched {where} after re-indenting by {sign}{_describe_ws(shift[1])}")
            else:
                notes.append(f"block {k} matched {where} after ignoring trailing whitespace")
            return pos, len(search), _reindent(replace, shift, k, where), notes
        several_loose = [item for item in loose if len(item[3]) > 1]
        if several_loose:
            search, _, _, hits = several_loose[0]
            raise self._ambiguous(k, search, [pos for pos, _ in hits], " (ignoring indentation and trailing spaces)")
        raise self._no_match(k, readings[0][0])

    def _replace(self, pos: int, size: int, new: list[str], k: int) -> None:
        for origin in self.origin[pos : pos + size]:
            if origin >= 0:
                self.replaced_by.setdefault(origin, k)
        self.lines[pos : pos + size] = new
        self.origin[pos : pos + size] = [-k] * len(new)

    def _check_frame(self, k: int, where: str) -> None:
        """The frozen lines must still be the parent's, byte for byte, in the same order."""
        assert self.frozen is not None
        try:
            now = _frozen(self.lines, _marker_pairs(self.lines))
        except PatchError as exc:
            raise PatchError(
                "outside-evolve-block",
                f"block {k} breaks the EVOLVE-BLOCK markers ({exc}; {where}); keep every '# EVOLVE-BLOCK-START' "
                "and '# EVOLVE-BLOCK-END' line as it is",
                block=k,
            ) from None
        if [text for _, text in self.frozen] == [text for _, text in now]:
            return
        what = _first_change(self.frozen, now)
        raise PatchError(
            "outside-evolve-block",
            f"block {k} {what}, outside the EVOLVE blocks ({where}); edit only the lines between "
            "'# EVOLVE-BLOCK-START' and '# EVOLVE-BLOCK-END'",
            block=k,
            detail=_frozen_diff(self.frozen, now),
        )

    # -- messages ------------------------------------------------------------------------------

    def _line_no(self, i: int) -> str:
        """A line number the proposer can find: the parent's, or the current one when the line is new."""
        if 0 <= i < len(self.origin) and self.origin[i] >= 0:
            return str(self.origin[i] + 1)
        return f"{i + 1} (written by block {-self.origin[i]})" if 0 <= i < len(self.origin) else str(i + 1)

    def _span(self, start: int, end: int) -> str:
        """'line 12' or 'lines 12-30', in the parent's numbers when the lines are the parent's."""
        if end <= start:
            return f"before line {self._line_no(start)}"
        first, last = self.origin[start], self.origin[end - 1]
        if first >= 0 and last >= 0:
            first, last = first + 1, last + 1
            suffix = ""
        else:
            first, last = start + 1, end
            suffix = " (of the program as earlier blocks left it)"
        return (f"line {first}" if first == last else f"lines {first}-{last}") + suffix

    def _ambiguous(self, k: int, search: list[str], hits: list[int], how: str) -> PatchError:
        places = [self._line_no(i) for i in hits]
        detail = []
        for i in hits:
            before = self.lines[i - 1] if i > 0 else "(start of file)"
            after = self.lines[i + len(search)] if i + len(search) < len(self.lines) else "(end of file)"
            detail.append(f"match at line {self._line_no(i)}: preceded by {before!r}, followed by {after!r}")
        return PatchError(
            "ambiguous",
            f"block {k}: SEARCH text (first line {_quote(_first_code_line(search))}) matches {len(hits)} places{how}, "
            f"at lines {_and_list(places)}; add nearby lines to SEARCH (and REPLACE) so it matches exactly one place",
            block=k,
            detail="\n".join(detail),
        )

    def _no_match(self, k: int, search: list[str]) -> PatchError:
        message = f"block {k}: SEARCH text not found (first SEARCH line {_quote(_first_code_line(search))})"
        was = _find_exact(self.parent, search, limit=2)
        if len(was) == 1:
            span = range(was[0], was[0] + len(search))
            changed = sorted({self.replaced_by[i] for i in span if i in self.replaced_by})
            if changed:
                names = _and_list([str(b) for b in changed])
                return PatchError(
                    "no-match",
                    f"{message}: it is at line {was[0] + 1} of the parent, but block{'s' * (len(changed) > 1)} {names} "
                    "already changed those lines; blocks must not overlap, so merge them into one block",
                    block=k,
                )
        near = _closest(self.lines, search)
        detail = ""
        if near is not None:
            start, end, same = near
            window = self.lines[start:end]
            total = sum(1 for line in search if line.strip())
            message += f"; closest is {self._span(start, end)}"
            if same:
                message += f" ({same} of its {total} non-blank lines appear there)"
            if [line.strip() for line in window] == [line.strip() for line in search]:
                tabs_there = any(line[: len(line) - len(line.lstrip())].count("\t") for line in window)
                tabs_here = any(line[: len(line) - len(line.lstrip())].count("\t") for line in search)
                if tabs_there != tabs_here:
                    message += f", which indents with {'tabs' if tabs_there else 'spaces'} where SEARCH uses " + (
                        "spaces" if tabs_there else "tabs"
                    )
                else:
                    message += ", which differs only in indentation, and not by one uniform shift"
            diff = list(
                difflib.unified_diff(
                    search, window, f"SEARCH of block {k}", f"program {self._span(start, end)}", lineterm="", n=1
                )
            )
            detail = "\n".join(diff[:40] + ([f"... ({len(diff) - 40} more lines)"] if len(diff) > 40 else []))
        else:
            message += "; nothing in the program resembles it (is the patch meant for another program?)"
        return PatchError(
            "no-match",
            f"{message}; copy the SEARCH lines exactly from the current program",
            block=k,
            detail=detail,
        )


def _combine(errors: list[PatchError]) -> PatchError:
    if len(errors) == 1:
        return errors[0]
    first = errors[0]
    others = [str(e.block) for e in errors[1:] if e.block is not None]
    tail = f" (block{'s' * (len(others) > 1)} {_and_list(others)} failed too)" if others else ""
    combined = PatchError(first.kind, f"{first}{tail}", block=first.block, detail=first.detail)
    combined.errors = errors
    return combined


def _cosmetic(line: str) -> str | None:
    """A frozen line as it matters for splicing: None for blank and comment lines; markers without labels."""
    text = line.rstrip()
    if not text.strip():
        return None
    if _START_RE.match(text):
        return "# EVOLVE-BLOCK-START"
    if _END_RE.match(text):
        return "# EVOLVE-BLOCK-END"
    if text.lstrip().startswith("#"):
        return None
    return text


def _rewrite(parent: list[str], pairs: list[tuple[int, int, str]], code: str) -> tuple[list[str], bool, list[str]]:
    """Lines of a full rewrite, kept to the parent's frozen frame (see the module docstring)."""
    lines, _ = _split(_normalize(code)[0])
    if not pairs:
        return lines, True, []
    try:
        new_pairs = _marker_pairs(lines)
    except PatchError as exc:
        raise PatchError(
            "outside-evolve-block",
            f"the rewrite's EVOLVE-BLOCK markers are broken ({exc}); keep every marker line of the parent",
        ) from None
    old_frozen, new_frozen = _frozen(parent, pairs), _frozen(lines, new_pairs)
    if [t for _, t in old_frozen] == [t for _, t in new_frozen]:
        return lines, True, []
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
        what = _first_change(old_norm, new_norm, rewrite=True)
        raise PatchError(
            "outside-evolve-block",
            f"the rewrite {what}, outside the EVOLVE blocks; {keep}",
            detail=_frozen_diff(old_frozen, new_frozen),
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
    return out, True, [note]


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
        source = _quote(lines[line - 1]) if 0 < line <= len(lines) else "end of file"
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
    parent_text, crlf = _normalize(parent_code)
    parent_lines, final = _split(parent_text)
    final = final or not parent_lines  # an empty parent takes the patch's own final newline
    try:
        pairs = _marker_pairs(parent_lines)
    except PatchError as exc:
        raise PatchError("markers", f"the parent's EVOLVE-BLOCK markers are broken: {exc}; fix them first") from None
    notes = list(patch.notes)
    if "\r\n" in parent_code and not crlf:
        notes.append("the parent mixes CRLF and LF line endings; the child uses LF throughout")
    origin: list[int] | None = None
    if patch.full_code is not None:
        lines, final, more = _rewrite(parent_lines, pairs, patch.full_code)
        notes.extend(more)
    else:
        if not patch.blocks:
            raise PatchError("no-patch", "the patch holds no SEARCH/REPLACE block and no full program")
        edit = _Edit(parent_lines, pairs)
        edit.run(patch.blocks)
        lines, origin = edit.lines, edit.origin
        notes.extend(edit.notes)
    child_text = _join(lines, final)
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


# --------------------------------------------------------------------------------------------------
# Writing patches.

_MERGE_GAP = 2  # hunks this close become one block: one SEARCH instead of two nearly touching ones


def _hunks(old: list[str], new: list[str]) -> list[tuple[int, int, int, int]]:
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
            if search and any(line.strip() for line in search) and len(_find_exact(work, search, limit=2)) == 1:
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
    return " ".join(re.sub(r"[<>]", "", name).split()) or "edit"


def _clean_description(description: str) -> str:
    return re.sub(r"</?(?:NAME|DESCRIPTION|DIFF|CODE)>", "", description, flags=re.IGNORECASE).strip() or "-"


def _format_blocks(name: str, description: str, blocks: list[tuple[list[str], list[str]]]) -> str:
    parts = [f"<NAME>\n{name}\n</NAME>\n\n<DESCRIPTION>\n{description}\n</DESCRIPTION>\n\n<DIFF>\n"]
    rendered = [
        "<<<<<<< SEARCH\n" + _block_text(search) + "=======\n" + _block_text(replace) + ">>>>>>> REPLACE\n"
        for search, replace in blocks
    ]
    parts.append("\n".join(rendered))
    parts.append("</DIFF>\n")
    return "".join(parts)


def _format_rewrite(name: str, description: str, code: str) -> str:
    runs = [len(m.group(1)) for line in code.split("\n") if (m := re.match(r"^ {0,3}(`+)", line))]
    fence = "`" * max([3] + [n + 1 for n in runs])
    body = code if code.endswith("\n") else code + "\n"
    return (
        f"<NAME>\n{name}\n</NAME>\n\n<DESCRIPTION>\n{description}\n</DESCRIPTION>\n\n"
        f"<CODE>\n{fence}python\n{body}{fence}\n</CODE>\n"
    )


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
    old, _ = _normalize(old_code)
    new, _ = _normalize(new_code)
    old_lines, old_final = _split(old)
    new_lines, _ = _split(new)
    if old == new:
        raise PatchError("no-change", "the two programs are identical; there is nothing to patch")
    name, description = _clean_name(name), _clean_description(description)
    blocks = _blocks_for(old_lines, new_lines) if old_lines else None
    if blocks:
        text = _format_blocks(name, description, blocks)
        try:
            edit = _Edit(old_lines, None)
            edit.run(parse_patch(text).blocks)
            if _join(edit.lines, old_final) == new:
                return text
        except PatchError:
            pass
    return _format_rewrite(name, description, new)
