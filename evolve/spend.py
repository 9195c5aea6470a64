"""What one proposal cost and who made it: the spend record a proposal, a program and a step share.

Declared once here so that the proposer's answer (`Proposal`), the stored program (`ProgramRecord`) and
the step log (`Step`) cannot drift apart: each inherits these fields, and copying the spend from one to
another is `**source.spend_fields()`. The archive keeps them as plain columns of the same names, so
archives written before this record existed read back unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(kw_only=True)
class Spend:
    """Who proposed (`proposer`, `model`) and what it cost (`tokens_in`, `tokens_out`, `cost` in dollars).

    Keyword-only, so a record that inherits it keeps its own positional fields first."""

    proposer: str = ""
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens together: what `campaign.max_tokens` counts."""
        return self.tokens_in + self.tokens_out

    def spend(self) -> "Spend":
        """The spend part alone, whichever record carries it."""
        return Spend(**{f.name: getattr(self, f.name) for f in fields(Spend)})

    def spend_fields(self) -> dict[str, Any]:
        """The spend as keyword arguments for another record."""
        return asdict(self.spend())


SPEND_FIELDS = tuple(f.name for f in fields(Spend))
