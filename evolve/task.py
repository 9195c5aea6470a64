"""The seam between the search and a problem.

`evolve/` only ever sees a `Task`: it hands over program text and gets a `Result` back. A user can plug
in another problem by implementing this interface without touching the search.

Besides the five things every task must do (name, entry function, problem statement, objectives, stamp,
evaluate), a task declares its optional features by overriding the methods of `TaskBase`, whose defaults
say "not offered": a seed program of its own, a holdout task for the campaign's closing check, and a
catalogue of block implementations for the offline mutator. A task factory may declare its options (for
`run --print-config`) by being a `TaskFactory`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable


@dataclass
class Result:
    """The outcome of evaluating one program.

    `error` is one line naming the broken rule (empty when correct). `metrics` holds every number the
    task measured; `scores` holds the value of each named scorer; `per_window` holds per-window detail
    for feedback and plots. The stamps (`evaluator_version`, `dataset`, `scorer`) let a reader refuse to
    compare numbers that came from different evaluators or data.
    """

    correct: bool
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    per_window: list[dict[str, float]] = field(default_factory=list)
    feedback: str = ""
    evaluator_version: str = ""
    dataset: dict[str, str] = field(default_factory=dict)
    scorer: str = ""
    stdout: str = ""
    stderr: str = ""

    @property
    def score(self) -> float | None:
        """The value of the chosen scorer, or None for an incorrect program."""
        if not self.correct:
            return None
        return self.scores.get(self.scorer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Result":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def failure(cls, error: str, **stamps: Any) -> "Result":
        """An incorrect result with a one-line error."""
        first_line = error.strip().splitlines()[0] if error.strip() else "unknown error"
        return cls(correct=False, error=first_line, **stamps)


@dataclass(frozen=True)
class Objective:
    """A number the search maximises (or minimises), read from `Result.metrics` or `Result.scores`."""

    key: str
    maximise: bool = True
    deterministic: bool = True  # False for wall-clock numbers, which differ from run to run
    # why this task cannot measure it (its data lacks what the number needs), with the way out; "" when it can
    unavailable: str = ""

    def value(self, result: Result) -> float | None:
        if not result.correct:
            return None
        if self.key in result.scores:
            v = result.scores[self.key]
        else:
            v = result.metrics.get(self.key)
        if v is None:
            return None
        return float(v) if self.maximise else -float(v)


@runtime_checkable
class Task(Protocol):
    """What the search needs from a problem."""

    name: str
    entry_function: str  # the function a program must define; patches may not drop it

    def problem_statement(self) -> str:
        """Plain words for a prompt: the contract, invariants, objective and scorer."""
        ...

    def objectives(self) -> list[Objective]:
        """The first objective is the primary score; the rest are used by Pareto selection."""
        ...

    def stamp(self) -> dict[str, Any]:
        """Evaluator version, dataset id and checksum, scorer, and any option that alters scores (under an
        `options` table): what makes two scores comparable. A resumed campaign refuses a change to any of
        it unless the user allows it; an option left out (a timeout) may change freely."""
        ...

    def evaluate(self, program_text: str) -> Result:
        """Score a program. Never raises for a bad program: returns `Result(correct=False, ...)`."""
        ...

    # ---- optional features: `TaskBase` gives each a default that declines it --------------------------------
    def seed_program(self) -> str:
        """The program a campaign starts from when `campaign.seed_program` is empty: a path, relative paths
        read from the working directory, else from the install. Empty: the user must name one."""
        ...

    def holdout(self) -> "Task | None":
        """The same task on data the search never scores, for the campaign's closing `holdout:` line (best
        vs seed). None: the task has no such data. May raise `UserError` naming why it has none here."""
        ...

    def mutation_catalogue(self) -> dict[str, list[str]] | None:
        """Alternative implementations of the seed's EVOLVE blocks (block label -> code texts) for the
        offline mutator. None: the mutator uses only its problem-free edits."""
        ...


@runtime_checkable
class StagedTask(Task, Protocol):
    """A task that can also score a program cheaply on a small part of its data: the first stage of an
    evaluation cascade. The loop stops a child whose first stage is clearly worse than its parent's (or
    broken) before paying for the full evaluation. Implementing it is optional; the loop checks for this
    protocol, and a task without it is always evaluated in full."""

    def evaluate_first_stage(self, program_text: str) -> Result:
        """Score a program on the first stage's part of the data (never raises for a bad program)."""
        ...

    def first_stage_of(self, result: Result) -> Result:
        """What a full `result` scores on the first stage's part of the data, comparable with
        `evaluate_first_stage`: the parent's side of the cascade's comparison, with no new evaluation."""
        ...


@runtime_checkable
class DescribedTask(Task, Protocol):
    """A task that says which of its metrics a model should see (balance, runtime, ...), leaving out
    harness internals. Optional: without it a prompt shows every metric."""

    def prompt_metrics(self) -> list[str]:
        """Metric keys worth showing in a prompt, most important first."""
        ...



class TaskBase:
    """Defaults for a `Task`'s optional features: subclass it and override the features your problem has.

    Each default declines the feature, so a task with none of them still runs a campaign."""

    def seed_program(self) -> str:
        return ""

    def holdout(self) -> "Task | None":
        return None

    def mutation_catalogue(self) -> dict[str, list[str]] | None:
        return None


@dataclass(frozen=True)
class TaskOption:
    """One option a task factory accepts, as `run --print-config` lists it."""

    name: str
    default: Any
    help: str = ""


@dataclass(frozen=True)
class TaskFactory:
    """A task factory that declares its options. A config's `task.factory` may name a plain function
    `factory(options) -> Task` instead; then `--print-config` can only say the options are undocumented."""

    build: Callable[[dict[str, Any]], Task]
    options: tuple[TaskOption, ...] = ()

    def __call__(self, options: dict[str, Any] | None = None) -> Task:
        return self.build(dict(options or {}))
