"""Why a reply cannot become a child: `PatchError` and its kinds."""
from __future__ import annotations

from evolve.errors import UserError
from evolve.patch.text import and_list

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


def combine(errors: list[PatchError]) -> PatchError:
    """One error for several failing blocks: it reads as the first and carries them all in `errors`."""
    if len(errors) == 1:
        return errors[0]
    first = errors[0]
    others = [str(e.block) for e in errors[1:] if e.block is not None]
    tail = f" (block{'s' * (len(others) > 1)} {and_list(others)} failed too)" if others else ""
    combined = PatchError(first.kind, f"{first}{tail}", block=first.block, detail=first.detail)
    combined.errors = errors
    return combined
