"""A suite: one balancer scored on several datasets or splits at once, its score their mean or their worst.

Why: a campaign scored on one split can win by fitting one router model's hot experts. Scoring every child
on several traces (other router models, other shapes) and ranking by the mean or the worst member rewards
balancers that generalise. Each member is an ordinary `evaluator.task.EplbTask`, so a member's numbers are
the ones `eplb-evolve evaluate` prints for it; this module only parses the option, picks each member's
placement configuration, and aggregates.

Placement rule (`member_placement`): the task's num_replicas / num_gpus / num_nodes describe the standard
DeepSeek-V3 configuration (288 slots, 32 GPUs, 4 nodes for 256 experts). Left at those defaults, a member
with another expert count gets the same configuration scaled to its shape as the calibration statistics do
(`StatsConfig.for_trace`): 8 experts and 9 slots per GPU, 8 GPUs a node (128 experts: 144 slots on 16
GPUs in 2 nodes; 64 experts: 72 slots on 8 GPUs in 1 node). Set any of the three and every member uses
the values as given. Expert groups always come from each trace (or `num_groups` when set).

Per-member results live in the suite's result under `suite/<dataset>:<split>/<metric>` (metrics, and
each scorer as `suite/<member>/score:<scorer>`); the unprefixed metrics are the members' mean, and each
named score is the members' mean or minimum (`suite_aggregate`).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from evaluator.traces.stats import StatsConfig
from evaluator.traces.trace import Trace
from evolve.errors import UserError
from evolve.members import PREFIX, SCORE_KEY, members_of  # suite/<member>/<metric>, suite/<member>/score:<scorer>
from evolve.scrub import scrub_result
from evolve.task import Objective, Result, TaskBase

AGGREGATES = ("mean", "worst")
# the placement options a suite scales to each member's shape while they keep these (the standard) values
STANDARD_PLACEMENT = {"num_replicas": 288, "num_gpus": 32, "num_nodes": 4}
STANDARD_EXPERTS = 256
MAX_MEMBERS = 64  # each member is a full evaluation of every child, its trace held in memory


@dataclass(frozen=True)
class Member:
    """One member as the user named it: a dataset (or trace file) and a split ('' = its default)."""

    dataset: str
    split: str

    @property
    def spec(self) -> str:
        return f"{self.dataset}:{self.split}" if self.split else self.dataset


def parse_suite(value: Any) -> list[Member]:
    """Members from the `suite` option: "a:search, b:search" or a TOML list ["a:search", "b"]. A member is
    NAME or NAME:SPLIT; a trace file path is taken whole (files have no split). One-line errors."""
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        parts = list(value)
    else:
        raise UserError(f"task option 'suite' must be a comma-separated string or a list of strings, got {value!r}")
    if len(parts) > MAX_MEMBERS:
        raise UserError(f"task option 'suite' names {len(parts)} members; a suite has at most {MAX_MEMBERS}")
    members: list[Member] = []
    for i, raw in enumerate(parts):
        text = raw.strip()
        if not text:
            raise UserError(f"task option 'suite': member {i + 1} is empty; write NAME or NAME:SPLIT, e.g. "
                            "'deepseek-v3:search, qwen3-30b-a3b:search'")
        name, sep, split = text.partition(":")
        if sep and ("/" in name or os.sep in name):  # a path: files are scored whole
            name, split = text, ""
        name, split = name.strip(), split.strip()
        if sep and not split:
            raise UserError(f"task option 'suite': member '{text}' names no split after ':'; write NAME or NAME:SPLIT")
        if not name:
            raise UserError(f"task option 'suite': member '{text}' names no dataset; write NAME or NAME:SPLIT")
        member = Member(name, split)
        if member in members:
            raise UserError(f"task option 'suite': member '{member.spec}' is named twice")
        members.append(member)
    if not members:
        raise UserError("task option 'suite' names no member; write e.g. 'deepseek-v3:search, qwen3-30b-a3b:search'")
    return members


def check_suite(options: Any) -> None:
    """The checks that span options when a suite is set (`EvalOptions.check`)."""
    parse_suite(options.suite)
    if options.dataset != type(options)().dataset:
        raise UserError(f"task option 'dataset' ('{options.dataset}') does not apply with a suite: name every dataset "
                        "in 'suite'")
    if options.split:
        raise UserError(f"task option 'split' ('{options.split}') does not apply with a suite: name each member's "
                        "split in 'suite' (NAME:SPLIT)")


def member_placement(trace: Trace, options: Any) -> dict[str, int]:
    """The placement options for one member (the rule in this module's docstring)."""
    given = {key: getattr(options, key) for key in STANDARD_PLACEMENT}
    if given != STANDARD_PLACEMENT or trace.num_experts == STANDARD_EXPERTS:
        return given
    scaled = StatsConfig.for_trace(trace)
    return {"num_replicas": scaled.num_replicas, "num_gpus": scaled.num_gpus, "num_nodes": scaled.num_nodes}


def aggregate(values: Sequence[float], how: str) -> float:
    """The members' mean or worst (minimum) of one score."""
    if how == "worst":
        return float(min(values))
    return float(np.mean(values))


def member_label(task: Any) -> str:
    """`<dataset>:<split>` of a member task, as its trace's stamp names it."""
    dataset = task.stamp()["dataset"]
    return f"{dataset['name']}:{dataset['split']}"


class SuiteTask(TaskBase):
    """Scores a program on every member task and aggregates: the `evolve.task.Task` a suite campaign sees."""

    name = "eplb"
    entry_function = "rebalance_experts"

    def __init__(self, options: Any, members: list[Any]) -> None:
        if not members:
            raise UserError("task option 'suite' names no member")
        self.options = options
        self.members = members
        self.how = options.suite_aggregate
        self.labels = [member_label(m) for m in members]
        repeated = {label for label in self.labels if self.labels.count(label) > 1}
        if repeated:
            raise UserError(f"task option 'suite': {', '.join(sorted(repeated))} is named twice (a default split "
                            "and the same split named)")

    # ---- what the search sees --------------------------------------------------------------------------
    def seed_program(self) -> str:
        return self.members[0].seed_program()

    def mutation_catalogue(self) -> dict[str, list]:
        return self.members[0].mutation_catalogue()

    def holdout(self) -> "SuiteTask":
        """Every member's holdout split; a member scoring a whole trace file has none and says so."""
        return self.with_options(split="holdout")

    def with_options(self, **changes: Any) -> "SuiteTask":
        """The same suite with some options changed in every member (each keeps its placement)."""
        return SuiteTask(self.options, [m.with_options(**changes) for m in self.members])

    def objectives(self) -> list[Objective]:
        return self.members[0].objectives()

    def prompt_metrics(self) -> list[str]:
        """Each member's score and balance first (where a program is weak), then the members' mean metrics
        (a prompt shows the first 16)."""
        keys = []
        for label in self.labels:
            keys += [f"{PREFIX}{label}/{SCORE_KEY}{self.options.scorer}", f"{PREFIX}{label}/balancedness_gpu"]
        return keys + list(self.members[0].prompt_metrics())

    def problem_statement(self) -> str:
        lines = [self.members[0].problem_statement(), "",
                 f"The program is scored on a suite of {len(self.members)} traces, each with its own shape and "
                 f"placement (the figures above are the first one's); the score is the "
                 f"{'minimum' if self.how == 'worst' else 'mean'} of the members' scores, so it must do well on "
                 "every one:"]
        for label, m in zip(self.labels, self.members):
            r, groups, nodes, gpus = m.args
            lines.append(f"- {label}: weight [{m.trace.num_layers}, {m.trace.num_experts}], {r} slots, {groups} "
                         f"groups, {nodes} nodes, {gpus} GPUs")
        return "\n".join(lines)

    def stamp(self) -> dict[str, Any]:
        """The suite's own stamp and every member's: a change to any member's data or options is a change."""
        keys = self.members[0].stamp()["options"]  # the options that alter scores, as the suite was given them
        options = {k: getattr(self.options, k) for k in keys}
        options["suite"] = [m.spec for m in parse_suite(self.options.suite)]  # a string or a list: one value
        return {**self._result_stamp(), "options": options,
                "members": {label: self._member_stamp(m) for label, m in zip(self.labels, self.members)}}

    @staticmethod
    def _member_stamp(member: Any) -> str:
        """What a member adds to the suite's options: its data (checksum) and its placement."""
        r, groups, nodes, gpus = member.args
        return f"sha256 {member.stamp()['dataset']['sha256']}, R={r} groups={groups} nodes={nodes} gpus={gpus}"

    def _result_stamp(self) -> dict[str, Any]:
        stamps = [m.stamp() for m in self.members]
        shas = "".join(s["dataset"]["sha256"] for s in stamps)
        return {
            "evaluator_version": stamps[0]["evaluator_version"],
            "dataset": {"name": "suite " + ",".join(self.labels), "split": self.how,
                        "sha256": hashlib.sha256(shas.encode()).hexdigest()},
            "scorer": self.options.scorer,
        }

    # ---- evaluation ----------------------------------------------------------------------------------
    def evaluate_members(self, program_text: str) -> list[Result]:
        """One result per member, in order (each from the member's own warm sandbox)."""
        return [m.evaluate(program_text) for m in self.members]

    def evaluate(self, program_text: str) -> Result:
        return scrub_result(self.combine(self.evaluate_members(program_text)))

    def combine(self, results: list[Result]) -> Result:
        """The suite's result from its members': incorrect when any member is; else per-member metrics under
        `suite/<member>/`, the members' mean metrics, and every scorer aggregated by `suite_aggregate`."""
        stamp = self._result_stamp()
        streams = {"stdout": "".join(r.stdout for r in results), "stderr": "".join(r.stderr for r in results)}
        for label, r in zip(self.labels, results):
            if not r.correct:
                return Result.failure(f"suite member {label}: {r.error}", **stamp, **streams)
        metrics: dict[str, float] = {}
        common = set.intersection(*(set(r.metrics) for r in results))
        for key in sorted(common):
            metrics[key] = float(np.mean([r.metrics[key] for r in results]))
        scores = {name: aggregate([r.scores[name] for r in results], self.how)
                  for name in results[0].scores if all(name in r.scores for r in results)}
        chosen = [r.scores.get(self.options.scorer) for r in results]
        if all(v is not None for v in chosen):
            metrics["suite_score_mean"] = aggregate(chosen, "mean")  # type: ignore[arg-type]
            metrics["suite_score_worst"] = aggregate(chosen, "worst")  # type: ignore[arg-type]
        metrics["suite_members"] = float(len(results))
        per_window = []
        for i, (label, r) in enumerate(zip(self.labels, results)):
            metrics.update({f"{PREFIX}{label}/{k}": v for k, v in r.metrics.items()})
            metrics.update({f"{PREFIX}{label}/{SCORE_KEY}{k}": v for k, v in r.scores.items()})
            per_window += [{**w, "member": i} for w in r.per_window]
        return Result(correct=True, metrics=metrics, scores=scores, per_window=per_window,
                      feedback=self._feedback(results), **stamp, **streams)

    def _feedback(self, results: list[Result]) -> str:
        scorer = self.options.scorer
        worst = min(range(len(results)), key=lambda i: results[i].scores.get(scorer, float("inf")))
        head = (f"suite of {len(results)} traces, score = {self.how} of the members' {scorer}: "
                + ", ".join(f"{label} {r.scores.get(scorer, float('nan')):.4f}"
                            for label, r in zip(self.labels, results))
                + f"; weakest: {self.labels[worst]}")
        return "\n".join([head] + [f"[{label}] " + r.feedback.replace("\n", f"\n[{label}] ")
                                   for label, r in zip(self.labels, results)])

    # ---- the cascade's first stage (evolve.task.StagedTask) -------------------------------------------
    def evaluate_first_stage(self, program_text: str) -> Result:
        """Each member's first stage (its first `first_stage_windows` windows), aggregated like a full result."""
        return scrub_result(self.combine([m.evaluate_first_stage(program_text) for m in self.members]))

    def first_stage_of(self, result: Result) -> Result:
        """A full suite result seen as its first stage: each member's part through the member's own rule."""
        if not result.correct:
            return Result(correct=False, error=result.error or "no per-window results", **self._result_stamp())
        per_member = members_of(result.metrics)
        parts = []
        for i, (label, m) in enumerate(zip(self.labels, self.members)):
            metrics = {k: v for k, v in per_member.get(label, {}).items() if not k.startswith(SCORE_KEY)}
            windows = [{k: v for k, v in w.items() if k != "member"} for w in result.per_window if w.get("member") == i]
            parts.append(m.first_stage_of(Result(correct=bool(metrics), metrics=metrics, per_window=windows)))
        return self.combine(parts)


def build_members(options: Any, make: Callable[[Any, Member], Any]) -> list[Any]:
    """The member tasks of `options.suite`, each built by `make(options, member)` (the caller's EplbTask)."""
    members: list[Any] = []
    labels: set[str] = set()
    for member in parse_suite(options.suite):
        try:
            members.append(make(options, member))
        except UserError as exc:
            raise UserError(f"suite member '{member.spec}': {str(exc).splitlines()[0]}") from exc
        label = member_label(members[-1])
        if label in labels:  # refused at once: two spellings of one file would otherwise load it many times
            raise UserError(f"task option 'suite': {label} is named twice ('{member.spec}' is a second name for it)")
        labels.add(label)
    return members
