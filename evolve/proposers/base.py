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
    history: list[str] = field(default_factory=list)  # recent attempts on this island, oldest first, one line each
    metric_keys: list[str] = field(default_factory=list)  # the metrics worth showing a model (empty: all)
    standing: str = ""  # the objective in numbers: the seed's and the best program's values so far
    notes: str = ""  # model-written notes on what has and has not worked (meta-recommendations)
    model: str = ""  # the model the campaign's ensemble chose for this proposal (empty: the proposer's choice)


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


@runtime_checkable
class AdaptiveProposer(Proposer, Protocol):
    """A proposer whose model choice learns from results. The loop asks it for the model when it draws a
    proposal and tells it each outcome in proposal order, so the choices are reproducible."""

    def pick_model(self, seed: int) -> str:
        """The model for the proposal drawn with `seed`."""
        ...

    def observe(self, model: str, improved: bool, tokens: int, cost: float) -> None:
        """The outcome of one proposal made with `model`."""
        ...


@runtime_checkable
class NoteWriter(Proposer, Protocol):
    """A proposer that can also write notes on what has and has not worked (meta-recommendations). The
    loop asks every `campaign.notes_interval` proposals, in proposal order, and shows the notes in every
    later prompt; they are archived as `meta_notes` events."""

    def write_notes(self, history: list[str], previous: str, seed: int) -> str:
        """Short notes from the recent attempts (one line each) and the previous notes; '' when none came."""
        ...

