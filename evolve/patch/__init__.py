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

Modules, one concept each: `errors` (PatchError and its kinds), `text` (line and wording helpers),
`parse` (reply text to `Patch`), `fences` (code fences in a reply), `blocks` (EVOLVE-BLOCK markers
and the frozen frame), `match` (finding a SEARCH text), `edit` (blocks applied in order), `apply`
(`apply_patch`, the checked `Child`) and `write` (`make_patch`).
"""
from __future__ import annotations

from evolve.patch.apply import DEFAULT_ENTRY, Child, apply_patch
from evolve.patch.blocks import EvolveBlock, evolve_blocks
from evolve.patch.errors import ERROR_KINDS, PatchError
from evolve.patch.parse import Patch, SearchReplace, parse_patch
from evolve.patch.write import make_patch

__all__ = [
    "DEFAULT_ENTRY",
    "ERROR_KINDS",
    "Child",
    "EvolveBlock",
    "Patch",
    "PatchError",
    "SearchReplace",
    "apply_patch",
    "evolve_blocks",
    "make_patch",
    "parse_patch",
]
