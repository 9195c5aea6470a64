"""The one interface every proposer shares: a request in, a proposal (patch text + applied child) out.

Proposers apply their own patch through `evolve.patch.apply_patch` so that a model whose patch fails can
be told why and retry; the mutator goes through the same engine and gets no shortcut.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from evolve.spend import Spend


@dataclass
class ProgramView:
    """What a prompt may show of an archived program."""

    id: str
    code: str
    metrics: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    feedback: str = ""
    patch_name: str = ""


@dataclass
class ProposalRequest:
    """Everything a proposer may use to write one child of `parent`."""

    parent: ProgramView
    inspirations: list[ProgramView] = field(default_factory=list)
    recent_failures: list[str] = field(default_factory=list)  # error lines of this parent's failed children
    problem_statement: str = ""
    entry_function: str = "rebalance_experts"
    generation: int = 0
    island: int = 0
    seed: int = 0  # drawn from the campaign RNG: a proposer that needs randomness seeds itself with this


@dataclass
class Proposal(Spend):
    """A proposer's answer. `child_code` is None when no usable patch came out (see `error`); its spend
    (proposer, model, tokens, cost) is the shared `Spend` record."""

    patch_text: str = ""
    child_code: str | None = None
    name: str = ""
    description: str = ""
    diff: str = ""
    error: str = ""
    attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.child_code is not None


@runtime_checkable
class Proposer(Protocol):
    name: str

    def propose(self, request: ProposalRequest) -> Proposal:
        """Never raises for endpoint or patch faults: they come back as a Proposal with `error` set."""
        ...
