"""Applying SEARCH/REPLACE blocks, in order, to the evolving program, within its EVOLVE-block frame."""
from __future__ import annotations

import difflib

from evolve.patch.blocks import first_change, frozen_diff, frozen_frame, marker_lines, marker_pairs
from evolve.patch.errors import PatchError, combine
from evolve.patch.match import closest, find_exact, find_loose, reindent
from evolve.patch.parse import SearchReplace
from evolve.patch.text import and_list, clip, describe_ws, first_code_line, quote, split_lines


def _indents_with_tabs(lines: list[str]) -> bool:
    """Whether any line's indentation holds a tab, so a tabs-for-spaces mismatch can be named."""
    return any(line[: len(line) - len(line.lstrip())].count("\t") for line in lines)


class Edit:
    """The evolving program while blocks apply: its lines, where each line came from, the frozen frame.

    `origin[i]` is the parent index of line i, or -k for a line written by block k; messages use it to
    speak in the parent's line numbers, which are the ones the proposer saw.
    """

    def __init__(self, parent: list[str], pairs: list[tuple[int, int, str]] | None) -> None:
        self.parent = parent
        self.lines = list(parent)
        self.origin = list(range(len(parent)))
        self.replaced_by: dict[int, int] = {}
        self.frozen = frozen_frame(parent, pairs) if pairs else None
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
            raise combine(errors)

    # -- one block ---------------------------------------------------------------------------------

    def _apply(self, block: SearchReplace) -> None:
        """Apply one block, or raise and leave the program as it was."""
        k = block.index
        readings = [(block.search, block.replace, block.how)] + list(block.alternatives)
        parsed = [(split_lines(s)[0], split_lines(r)[0], how) for s, r, how in readings]
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
            markers_old, markers_new = marker_lines(old), marker_lines(new)
            if markers_old != markers_new:
                raise PatchError(
                    "outside-evolve-block",
                    f"block {k} changes EVOLVE-BLOCK marker lines ({where}; SEARCH has "
                    f"{and_list(markers_old or ['none'])}, REPLACE has {and_list(markers_new or ['none'])}); keep "
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
        exact = [(s, r, how, find_exact(self.lines, s)) for s, r, how in readings]
        unique = [item for item in exact if len(item[3]) == 1]
        if unique:
            search, replace, how, hits = max(unique, key=lambda item: len(item[0]))
            return hits[0], len(search), replace, [f"block {k}: read {how}"] if how else []
        several = [item for item in exact if len(item[3]) > 1]
        if several:
            search, _, _, hits = several[0]
            raise self._ambiguous(k, search, hits, "")
        loose = [(s, r, how, find_loose(self.lines, s)) for s, r, how in readings]
        unique_loose = [item for item in loose if len(item[3]) == 1]
        if unique_loose:
            search, replace, how, hits = max(unique_loose, key=lambda item: len(item[0]))
            pos, shift = hits[0]
            where = f"line {self._line_no(pos)}"
            notes = [f"block {k}: read {how}"] if how else []
            if shift[1]:
                sign = "+" if shift[0] == "add" else "-"
                notes.append(f"block {k} matched {where} after re-indenting by {sign}{describe_ws(shift[1])}")
            else:
                notes.append(f"block {k} matched {where} after ignoring trailing whitespace")
            return pos, len(search), reindent(replace, shift, k, where), notes
        several_loose = [item for item in loose if len(item[3]) > 1]
        if several_loose:
            search, _, _, hits = several_loose[0]
            raise self._ambiguous(k, search, [pos for pos, _ in hits], " (ignoring indentation and trailing spaces)")
        raise self._no_match(k, readings[0][0])

    def _replace(self, pos: int, size: int, new: list[str], k: int) -> None:
        """Put block k's lines in place, remembering which parent lines it replaced (for overlap messages)."""
        for origin in self.origin[pos : pos + size]:
            if origin >= 0:
                self.replaced_by.setdefault(origin, k)
        self.lines[pos : pos + size] = new
        self.origin[pos : pos + size] = [-k] * len(new)

    def _check_frame(self, k: int, where: str) -> None:
        """The frozen lines must still be the parent's, byte for byte, in the same order."""
        assert self.frozen is not None
        try:
            now = frozen_frame(self.lines, marker_pairs(self.lines))
        except PatchError as exc:
            raise PatchError(
                "outside-evolve-block",
                f"block {k} breaks the EVOLVE-BLOCK markers ({exc}; {where}); keep every '# EVOLVE-BLOCK-START' "
                "and '# EVOLVE-BLOCK-END' line as it is",
                block=k,
            ) from None
        if [text for _, text in self.frozen] == [text for _, text in now]:
            return
        what = first_change(self.frozen, now)
        raise PatchError(
            "outside-evolve-block",
            f"block {k} {what}, outside the EVOLVE blocks ({where}); edit only the lines between "
            "'# EVOLVE-BLOCK-START' and '# EVOLVE-BLOCK-END'",
            block=k,
            detail=frozen_diff(self.frozen, now),
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
        """The error for a SEARCH found in several places, with the lines around each."""
        places = [self._line_no(i) for i in hits]
        detail = []
        for i in hits:
            before = self.lines[i - 1] if i > 0 else "(start of file)"
            after = self.lines[i + len(search)] if i + len(search) < len(self.lines) else "(end of file)"
            detail.append(f"match at line {self._line_no(i)}: preceded by {before!r}, followed by {after!r}")
        return PatchError(
            "ambiguous",
            f"block {k}: SEARCH text (first line {quote(first_code_line(search))}) matches {len(hits)} places{how}, "
            f"at lines {and_list(places)}; add nearby lines to SEARCH (and REPLACE) so it matches exactly one place",
            block=k,
            detail="\n".join(detail),
        )

    def _no_match(self, k: int, search: list[str]) -> PatchError:
        """The error for a SEARCH found nowhere: an overlap with an earlier block, or the closest region."""
        message = f"block {k}: SEARCH text not found (first SEARCH line {quote(first_code_line(search))})"
        was = find_exact(self.parent, search, limit=2)
        if len(was) == 1:
            span = range(was[0], was[0] + len(search))
            changed = sorted({self.replaced_by[i] for i in span if i in self.replaced_by})
            if changed:
                names = and_list([str(b) for b in changed])
                return PatchError(
                    "no-match",
                    f"{message}: it is at line {was[0] + 1} of the parent, but block{'s' * (len(changed) > 1)} {names} "
                    "already changed those lines; blocks must not overlap, so merge them into one block",
                    block=k,
                )
        near = closest(self.lines, search)
        detail = ""
        if near is not None:
            start, end, same = near
            window = self.lines[start:end]
            total = sum(1 for line in search if line.strip())
            message += f"; closest is {self._span(start, end)}"
            if same:
                message += f" ({same} of its {total} non-blank lines appear there)"
            if [line.strip() for line in window] == [line.strip() for line in search]:
                tabs_there, tabs_here = _indents_with_tabs(window), _indents_with_tabs(search)
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
            detail = clip(diff)
        else:
            message += "; nothing in the program resembles it (is the patch meant for another program?)"
        return PatchError(
            "no-match",
            f"{message}; copy the SEARCH lines exactly from the current program",
            block=k,
            detail=detail,
        )
