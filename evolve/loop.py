"""The campaign loop: draw parents, ask the proposer, evaluate children, record every outcome in order.

Why it is reproducible: proposal `i` draws its parent with a `random.Random` seeded from
(campaign seed, i), never from a shared evolving generator, and outcomes are applied to the archive and
the population strictly in index order, whatever order the threads finish in. A proposal is drawn right
after an outcome is applied, when fewer than `workers + proposers` proposals are unfinished, so the
state it sees depends only on the outcomes before it. With a deterministic proposer and task the
archive is the same on every run with the same settings; a resumed run replays the archive's steps
through the same code and continues at the next index, reaching the archive an uninterrupted run
would have.

Why nothing is lost: an evaluated program is written to the archive the moment its result arrives
(even if its turn to be applied has not come), and each applied outcome is one transaction. A resumed
run finds such programs by their content address and does not evaluate them again.
"""
from __future__ import annotations

import hashlib
import os
import random
import sys
import time
from collections import OrderedDict
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from evolve.archive import Archive, Event, ProgramRecord, Step, program_id
from evolve.backends import Backend
from evolve.config import Config
from evolve.errors import UserError
from evolve.proposers.base import AdaptiveProposer, NoteWriter, ProgramView, Proposal, ProposalRequest, Proposer
from evolve.scrub import scrub, scrub_data, scrub_result
from evolve.selection import Member, Population, Settings, fitness, grid_cell, normalise
from evolve.task import DescribedTask, Objective, Result, StagedTask, Task

RECENT_FAILURES = 3  # error lines of a parent's failed children shown in its next prompt
FIRST_FAILURES = 4  # failed proposals that end a run whose proposer never gave a child


def derive_seed(seed: int, index: int, purpose: str) -> int:
    """A 64-bit seed for one purpose of one proposal: the whole RNG state is (campaign seed, index)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{index}/{purpose}".encode()).digest()[:8], "big")


def resolve_objectives(keys: list[str], offered: list[Objective]) -> list[Objective]:
    """The task's objectives named in the config (default: the task's primary objective alone)."""
    if not offered:
        raise UserError("the task offers no objective; its objectives() must return at least one")
    if not keys:
        return [offered[0]]
    by_key = {o.key: o for o in offered}
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise UserError(f"campaign.objectives: '{missing[0]}' is not an objective of the task; it offers "
                        f"{', '.join(by_key)}")
    chosen = [by_key[k] for k in keys]
    for objective in chosen:
        if objective.unavailable:
            raise UserError(f"campaign.objectives: '{objective.key}' is unavailable: {objective.unavailable}")
    return chosen


@dataclass
class Slot:
    """One proposal index from its draw until its outcome is applied."""

    idx: int
    island: int
    parent: Member
    request: ProposalRequest
    inspirations: list[str]
    against: list[str]  # the island's elites when drawn: what novelty compares with
    drawn_after: int  # the last applied step when drawn
    started: bool = False
    proposal: Proposal | None = None
    child: str | None = None
    near: tuple[str, float] | None = None
    result: Result | None = None
    done: bool = False


@dataclass
class Summary:
    run_dir: Path
    reason: str
    evaluations: int = 0
    valid: int = 0
    cost: float = 0.0
    tokens: int = 0
    best_id: str = ""
    best_score: float | None = None
    seed_id: str = ""
    seed_score: float | None = None
    best_file: str = ""
    elapsed_s: float = 0.0
    holdout: str = ""  # best vs seed on the task's holdout split, filled in by the caller
    limit: str = ""  # the campaign budget that stopped the run (a CampaignConfig field), "" for none
    new_evaluations: int = 0  # children this session evaluated (a resumed run counts only its own)


class Campaign:
    """Runs one campaign against an open archive. Single-threaded: only the loop touches the archive."""

    def __init__(self, config: Config, task: Task, proposer: Proposer, backend: Backend, archive: Archive,
                 run_dir: Path, progress: Callable[["Campaign"], Any] | None = None) -> None:
        self.config, self.task, self.proposer, self.backend = config, task, proposer, backend
        self.archive, self.run_dir = archive, run_dir
        c = config.campaign
        self.objectives = resolve_objectives(c.objectives, task.objectives())
        self.population = Population(Settings(c.islands, c.elite_size, c.selection, c.children_penalty,
                                              pareto=len(self.objectives) > 1, grid=bool(c.map_elites)))
        self.depth = c.workers + c.proposers
        self.statement = task.problem_statement()
        self.applied = -1  # last applied step
        self.next_idx = 1  # next proposal index to draw (0 is the seed)
        self.pending: dict[int, Slot] = {}
        self.evals: dict[str, tuple[Future, list[int]]] = {}  # child id -> evaluation, indices waiting on it
        self.waiting: dict[Future, tuple[str, Any]] = {}
        self.known: set[str] = set()  # programs applied so far
        self.recent_failures: dict[str, list[str]] = {}
        self.history: dict[int, list[str]] = {}  # island -> recent attempts, one line each, in index order
        self.primary: dict[str, float] = {}  # program id -> primary objective value (correct programs)
        self.metric_keys = list(task.prompt_metrics()) if isinstance(task, DescribedTask) else []
        self.embedder = self._embedder()
        self.notes = ""  # the latest model-written notes, shown in every prompt drawn after them
        self._archived_notes = {e["idx"]: str(e["detail"].get("notes", "")) for e in archive.events("meta_notes")}
        self.evaluations = self.valid = self.tokens = self.fail_streak = 0
        self.usable = 0  # proposals that gave a child (evaluated, duplicate or rejected)
        self.cost = 0.0
        self.last_error = ""
        self.exhausted = False
        self.stop_reason = ""
        self.stop_limit = ""
        self.replayed_evaluations = 0
        self.stored: dict[int, Step] = {}  # during replay: the archived outcome of each index
        self.seed_member: Member | None = None
        self._views: OrderedDict[str, ProgramView] = OrderedDict()
        self.elapsed_before = float(archive.meta("elapsed_s", 0.0))
        self.started_at = time.monotonic()
        self.progress = progress or (lambda campaign: None)
        self._proposer_pool = ThreadPoolExecutor(max_workers=c.proposers, thread_name_prefix="propose")
        self.staged = c.cascade and isinstance(task, StagedTask)
        # cascade threads run a child's first stage, then wait on the backend for its full evaluation: at
        # most `workers` of them, so the cascade never runs more evaluations at once than the backend would
        self._cascade_pool = (ThreadPoolExecutor(max_workers=c.workers, thread_name_prefix="cascade")
                              if self.staged else None)

    # ---- entry ---------------------------------------------------------------------------------------
    def run(self, seed_code: str | None = None) -> Summary:
        """Start from `seed_code` on an empty archive, or replay the archive and continue."""
        try:
            steps = self.archive.steps()
            if steps:
                self._replay(steps)
            else:
                self._evaluate_seed(seed_code or "")
            self._issue()
            self._start_proposals()
            self._loop()
        finally:
            self._proposer_pool.shutdown(wait=False, cancel_futures=True)
            if self._cascade_pool is not None:
                self._cascade_pool.shutdown(wait=False, cancel_futures=True)
        reason, limit = (self.stop_reason, self.stop_limit) if self.stop_reason else self._why_stopped()
        self.archive.add_event(Event("run_finished", detail={"reason": reason, "limit": limit}), self.applied)
        summary = self.summary(reason)
        summary.limit, summary.new_evaluations = limit, self.evaluations - self.replayed_evaluations
        return summary

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started_at

    def summary(self, reason: str = "") -> Summary:
        best, seed = self.population.best, self.seed_member
        versions = self.archive.versions()
        return Summary(
            run_dir=self.run_dir, reason=reason, evaluations=self.evaluations, valid=self.valid, cost=self.cost,
            tokens=self.tokens, best_id=best.id if best else "", best_score=best.primary if best else None,
            seed_id=seed.id if seed else "", seed_score=seed.primary if seed else None,
            best_file=str(self.run_dir / versions[-1]["path"]) if versions and versions[-1]["path"] else "",
            elapsed_s=self.elapsed(),
        )

    # ---- the seed and the replay ----------------------------------------------------------------------
    def _evaluate_seed(self, code: str) -> None:
        pid = program_id(code)
        result = self.archive.result(pid) or self._result_of(self.backend.submit(code))
        record = ProgramRecord(id=pid, code=code, proposer="seed", patch_name="seed")
        self.archive.put_program(record, result)
        if not result.correct:
            raise UserError(f"the seed program is incorrect: {result.error}; fix campaign.seed_program, "
                            f"then continue with --resume {self.run_dir}")
        if fitness(result, self.objectives) is None:
            keys = ", ".join(o.key for o in self.objectives)
            raise UserError(f"the seed's result has no value for campaign.objectives ({keys}); pick objectives the "
                            "task reports")
        self._apply(Step(idx=0, kind="seed", program_id=pid), result, record, live=True)

    def _replay(self, steps: list[Step]) -> None:
        """Rebuild the population by applying the archived steps, drawing proposals at the same moments."""
        self.stored = {s.idx: s for s in steps}
        for step in steps:
            if step.idx >= self.next_idx and step.idx > 0:  # drawn later in the original run (budget changed)
                self.population.children[step.parent_id] += 1
                self.next_idx = step.idx + 1
            pid = step.program_id
            result = self.archive.result(pid) if pid and step.kind in ("seed", "evaluated") else None
            record = self.archive.program(pid) if result is not None else None
            self._apply(step, result, record, live=False)
            self._issue()
        self.stored = {}
        self.replayed_evaluations = self.evaluations
        self.exhausted = False  # a resumed proposer starts with whatever budget it has now
        self.archive.add_event(Event("run_resumed", detail={"steps": len(steps)}), self.applied)

    # ---- drawing proposals ------------------------------------------------------------------------
    def _may_draw(self, live: bool) -> bool:
        c = self.config.campaign
        in_flight = self.next_idx - 1 - self.applied
        if self.stop_reason or self.exhausted or self.applied < 0 or in_flight >= self.depth:
            return False
        if self.evaluations + in_flight >= c.max_evaluations:
            return False
        if (c.max_cost and self.cost >= c.max_cost) or (c.max_tokens and self.tokens >= c.max_tokens):
            return False
        if self.fail_streak >= self._fail_limit():
            return False
        if live and c.max_minutes and self.elapsed() >= c.max_minutes * 60:
            self._stop(f"time budget reached ({c.max_minutes:g} minutes over all sessions)", "max_minutes")
            return False
        return True

    def _issue(self) -> None:
        live = not self.stored
        while self._may_draw(live):
            idx = self.next_idx
            self.next_idx += 1
            stored = self.stored.get(idx)
            if stored is not None:  # replay: this proposal's outcome is in the archive already
                if stored.parent_id:
                    self.population.children[stored.parent_id] += 1
                continue
            self.pending[idx] = self._draw(idx)

    def _draw(self, idx: int) -> Slot:
        c = self.config.campaign
        island = (idx - 1) % c.islands
        rng = random.Random(derive_seed(c.seed, idx, "select"))
        parent = self.population.draw_parent(island, rng)
        self.population.children[parent.id] += 1
        inspirations = [m.id for m in self.population.inspirations(parent, c.inspirations, rng)]
        request = ProposalRequest(
            parent=self._view(parent.id), inspirations=[self._view(i) for i in inspirations],
            recent_failures=list(self.recent_failures.get(parent.id, [])), problem_statement=self.statement,
            entry_function=self.task.entry_function, generation=parent.generation + 1, island=island,
            seed=derive_seed(c.seed, idx, "propose") % (2**31), history=list(self.history.get(island, [])),
            metric_keys=self.metric_keys, standing=self._standing(parent), notes=self.notes,
        )
        if isinstance(self.proposer, AdaptiveProposer):  # chosen here, in proposal order: reproducible
            request.model = self.proposer.pick_model(request.seed)
        against = [m.id for m in self.population.elites[island]]
        return Slot(idx, island, parent, request, inspirations, against, drawn_after=self.applied)

    def _standing(self, parent: Member) -> str:
        """The objective in numbers: seed, best so far and this parent, on the primary objective."""
        key = self.objectives[0].key
        best, seed = self.population.best, self.seed_member
        parts = [f"Objective '{key}' (higher is better{'' if self.objectives[0].maximise else '; shown negated'})."]
        if seed is not None:
            parts.append(f"Seed program: {seed.primary:.6g}.")
        if best is not None:
            parts.append(f"Best so far: {best.primary:.6g} (program {best.id[:12]}, generation {best.generation}).")
        parts.append(f"This parent: {parent.primary:.6g}.")
        return " ".join(parts)

    def _embedder(self) -> Any:
        """The embedding client for novelty by meaning, when `campaign.novelty_embeddings` names a model."""
        model = self.config.campaign.novelty_embeddings
        if not model:
            return None
        from evolve.embeddings import Embedder

        llm = self.config.proposer.llm
        base_url = getattr(llm, "base_url", "") or os.environ.get(getattr(llm, "base_url_env", "OPENAI_BASE_URL"), "")
        return Embedder(model, base_url, getattr(llm, "api_key_env", "OPENAI_API_KEY"),
                        self.run_dir / "embeddings.sqlite")

    def _semantic_duplicate(self, code: str, slot: Slot) -> tuple[str, float] | None:
        """(elite id, cosine) when the child's embedding is too close to an island elite's; None otherwise."""
        if self.embedder is None:
            return None
        others = {pid: self.population.normalised.get(pid, "") for pid in slot.against}
        try:
            hit = self.embedder.closest(normalise(code), {k: v for k, v in others.items() if v})
        except Exception as exc:  # an aid, not a gate: a failing endpoint only skips the check
            self.archive.add_event(Event("embedding_failed", None, {"error": f"{type(exc).__name__}: {exc}"[:500]}))
            return None
        if hit is not None and hit[1] >= self.config.campaign.novelty_embedding_threshold:
            return hit
        return None

    def _refresh_notes(self, idx: int, events: list[Event], live: bool) -> None:
        """Ask the proposer for new notes from every island's recent attempts (a resumed run reads them back)."""
        if idx in self._archived_notes or not live:
            self.notes = self._archived_notes.get(idx, self.notes)
            return
        history = [f"island {i}: {line}" for i in sorted(self.history) for line in self.history[i]]
        try:
            notes = self.proposer.write_notes(history, self.notes,
                                              derive_seed(self.config.campaign.seed, idx, "notes") % (2**31))  # type: ignore[attr-defined]
        except UserError:
            raise
        except Exception as exc:  # notes are an aid: a failure keeps the old ones
            notes = ""
            events.append(Event("meta_notes_failed", None, {"error": f"{type(exc).__name__}: {exc}"}))
        if notes.strip():
            self.notes = notes.strip()[:4000]
            events.append(Event("meta_notes", None, {"notes": self.notes}))
            self._archived_notes[idx] = self.notes

    def _remember_attempt(self, step: Step, result: Result | None) -> None:
        """One line for the island's history: what was tried and what came of it."""
        size = self.config.campaign.history_size
        if not size or step.kind == "seed":
            return
        name = str(step.detail.get("name") or "unnamed")
        before = self.primary.get(step.parent_id or "")
        if step.kind == "evaluated" and result is not None and result.correct and step.program_id in self.primary:
            after = self.primary[step.program_id]
            change = f"{before:.6g} -> {after:.6g} ({after - before:+.4g})" if before is not None else f"{after:.6g}"
            line = f"{name}: score {change}"
        elif step.kind == "evaluated" and result is not None:
            line = f"{name}: incorrect or stopped: {result.error}"
        else:
            line = f"{name}: {step.kind}: {step.error}"
        lines = self.history.setdefault(step.island, [])
        lines.append(line)
        del lines[:-size]

    def _view(self, pid: str) -> ProgramView:
        view = self._views.get(pid)
        if view is None:
            record, result = self.archive.program(pid), self.archive.result(pid) or Result(correct=False)
            view = ProgramView(id=pid, code=record.code, metrics=dict(result.metrics), score=result.score,
                               feedback=result.feedback, patch_name=record.patch_name)
            self._views[pid] = view
            if len(self._views) > 256:
                self._views.popitem(last=False)
        return view

    # ---- running proposals and evaluations ----------------------------------------------------------
    def _start_proposals(self) -> None:
        for idx in sorted(self.pending):
            slot = self.pending[idx]
            if not slot.started:
                slot.started = True
                self.waiting[self._proposer_pool.submit(self._propose, slot.request)] = ("propose", idx)

    def _propose(self, request: ProposalRequest) -> Proposal:
        try:
            proposal = self.proposer.propose(request)
        except UserError:
            raise  # the user must act (a transcript that does not match, a bad setting): end the run with it
        except Exception as exc:  # a proposer bug must not end the campaign: it counts as a failed proposal
            return _scrubbed(Proposal(error=f"proposer raised {type(exc).__name__}: {exc}",
                                      proposer=self.proposer.name))
        return _scrubbed(proposal) if isinstance(proposal, Proposal) else Proposal(error="proposer returned no "
                                                                                         "Proposal")

    def _loop(self) -> None:
        c = self.config.campaign
        while self.waiting:
            timeout = None
            if c.max_minutes and not self.stop_reason:
                timeout = max(0.0, c.max_minutes * 60 - self.elapsed())
            done, _ = wait(list(self.waiting), timeout=timeout, return_when=FIRST_COMPLETED)
            if not done:
                self._stop(f"time budget reached ({c.max_minutes:g} minutes over all sessions)", "max_minutes")
            for future in done:
                kind, key = self.waiting.pop(future)
                if future.cancelled():
                    continue
                if kind == "propose":
                    self._on_proposal(self.pending[key], self._proposal_of(future))
                else:
                    self._on_evaluation(key, future)
            self._apply_ready()

    def _stop(self, reason: str, limit: str = "") -> None:
        """Draw nothing more; proposals not yet started are dropped, work already running finishes."""
        if self.stop_reason:
            return
        self.stop_reason, self.stop_limit = reason, limit
        for future, (kind, _) in list(self.waiting.items()):
            if kind == "propose" and future.cancel():
                del self.waiting[future]

    def _proposal_of(self, future: Future) -> Proposal:
        """The proposer's answer; a UserError from the proposer ends the run cleanly, keeping all finished work."""
        try:
            return future.result()
        except UserError as exc:
            self._stop("the proposer needs attention")
            raise UserError(f"{exc} (finished evaluations are saved; continue with --resume {self.run_dir})") from exc

    def _on_proposal(self, slot: Slot, proposal: Proposal) -> None:
        slot.proposal = proposal
        if not proposal.ok:
            slot.done = True
            return
        code = proposal.child_code or ""
        slot.child = pid = program_id(code)
        if pid not in self.known:
            c = self.config.campaign
            slot.near = self.population.near_duplicate(
                code, slot.island, slot.against, slot.drawn_after, c.novelty_threshold, c.novelty_structural)
            slot.near = slot.near or self._semantic_duplicate(code, slot)
        if pid in self.known or slot.near is not None:
            slot.done = True
            return
        if pid in self.evals:  # the same code is being evaluated for an earlier proposal: share it
            self.evals[pid][1].append(slot.idx)
            return
        cached = self.archive.result(pid)  # evaluated before a crash and not yet applied
        if cached is not None:
            slot.result, slot.done = cached, True
            return
        future = self._submit(code, slot.parent.id)
        self.evals[pid] = (future, [slot.idx])
        self.waiting[future] = ("evaluate", pid)

    def _submit(self, code: str, parent_id: str) -> Future:
        """The child's evaluation: straight to the backend, or through the cascade's first stage."""
        if self._cascade_pool is None:
            return self.backend.submit(code)
        parent = self.archive.result(parent_id)
        parent_stage = self.task.first_stage_of(parent) if parent is not None else None  # type: ignore[attr-defined]
        parent_value = self.objectives[0].value(parent_stage) if parent_stage is not None else None
        return self._cascade_pool.submit(self._cascade, code, parent_value)

    def _cascade(self, code: str, parent_value: float | None) -> Result:
        """First stage, then (when the child is not clearly worse than its parent) the full evaluation.

        The decision is kept in the result's metrics (`cascade_*`), so it is archived with the program."""
        tolerance = self.config.campaign.cascade_tolerance
        stage = self.task.evaluate_first_stage(code)  # type: ignore[attr-defined]
        if not isinstance(stage, Result):
            raise TypeError(f"{type(self.task).__name__}.evaluate_first_stage returned {type(stage).__name__}, not a "
                            "Result")
        value = self.objectives[0].value(stage)
        decision: dict[str, float] = {"cascade_first_stage_passed": 0.0}
        if value is not None:
            decision["cascade_first_stage_value"] = value
        if parent_value is not None:
            decision["cascade_parent_first_stage_value"] = parent_value
        if value is None:
            stage.correct = False
            stage.error = stage.error or "the first stage gave no value for the objective"
            stage.metrics.update(decision)
            return stage
        if parent_value is not None and value < parent_value - tolerance * abs(parent_value):
            return Result(
                correct=False, metrics={**stage.metrics, **decision}, per_window=stage.per_window,
                feedback=stage.feedback, evaluator_version=stage.evaluator_version, dataset=stage.dataset,
                scorer=stage.scorer, stdout=stage.stdout, stderr=stage.stderr,
                error=(f"stopped by the first stage: {value:.6g} against the parent's {parent_value:.6g} on the same "
                       f"data (campaign.cascade_tolerance {tolerance:g})"),
            )
        full = self.backend.submit(code).result()
        if isinstance(full, Result):
            decision["cascade_first_stage_passed"] = 1.0
            full.metrics.update(decision)
        return full

    def _on_evaluation(self, pid: str, future: Future) -> None:
        _, indices = self.evals.pop(pid)
        result = self._result_of(future)
        first = self.pending[min(indices)]
        self.archive.put_program(self._record(first), result)
        for idx in indices:
            slot = self.pending[idx]
            slot.result, slot.done = result, True

    def _result_of(self, future: Future) -> Result:
        """The evaluation's Result; an exception from the task is a task bug, which ends the run cleanly."""
        try:
            return scrub_result(future.result())
        except Exception as exc:
            self._stop("the task failed")
            raise UserError(
                f"the task's evaluate raised {type(exc).__name__}: {scrub(str(exc))} (a bug in the task, not in the "
                "program); "
                f"fix it and continue with --resume {self.run_dir}"
            ) from exc

    def _record(self, slot: Slot) -> ProgramRecord:
        p = slot.proposal or Proposal()
        return ProgramRecord(
            id=slot.child or "", code=p.child_code or "", parent_id=slot.parent.id, inspirations=slot.inspirations,
            island=slot.island, generation=slot.parent.generation + 1, patch_name=p.name,
            patch_description=p.description, patch_diff=p.diff, **p.spend_fields(),
        )

    # ---- applying outcomes in index order --------------------------------------------------------------
    def _apply_ready(self) -> None:
        while (slot := self.pending.get(self.applied + 1)) is not None and slot.done:
            del self.pending[slot.idx]
            step, record = self._outcome(slot)
            self._apply(step, slot.result, record, live=True)
            self._issue()
            self._start_proposals()

    def _outcome(self, slot: Slot) -> tuple[Step, ProgramRecord | None]:
        """Classify a finished proposal: failed, duplicate, rejected (novelty) or evaluated."""
        p = slot.proposal or Proposal(error="no proposal")
        step = Step(idx=slot.idx, kind="failed", parent_id=slot.parent.id, island=slot.island, **p.spend_fields(),
                    seed=slot.request.seed,
                    detail={"name": p.name, "attempts": p.attempts,
                            "budget_exhausted": bool(p.extra.get("budget_exhausted"))})
        if not p.ok:
            step.error = p.error or "the proposer gave no child"
            step.detail["patch_text"] = p.patch_text[:20000]
            return step, None
        step.program_id = slot.child
        if slot.child in self.known:
            step.kind, step.error = "duplicate", "identical to a program already in the archive"
        elif slot.near is not None:
            near_id, ratio = slot.near
            step.kind = "rejected"
            step.error = f"nearly identical to {near_id[:12] or 'an island program'} (similarity {ratio:.4f})"
            step.program_id = None
            step.detail["near"] = near_id
        else:
            step.kind = "evaluated"
            return step, self._record(slot)
        return step, None

    def _apply(self, step: Step, result: Result | None, record: ProgramRecord | None, live: bool) -> None:
        """Fold one outcome into the population (and, when live, into the archive in one transaction)."""
        c = self.config.campaign
        events: list[Event] = []
        members: list[tuple[int, str, str]] = []
        version = None
        self.cost += step.cost
        self.tokens += step.tokens
        self.exhausted = self.exhausted or bool(step.detail.get("budget_exhausted"))
        if step.kind in ("seed", "evaluated") and result is not None and record is not None:
            self.fail_streak = 0
            self.usable += step.kind == "evaluated"
            self.known.add(record.id)
            self.evaluations += step.kind == "evaluated"
            self.valid += result.correct and step.kind == "evaluated"
            version = self._place(step, result, record, members, events)
            if result.metrics.get("cascade_first_stage_passed") == 0.0:
                events.append(Event("cascade_stopped", record.id, {"error": result.error}))
            if not result.correct:
                self._note_failure(step.parent_id, result.error)
                if "timed out" in result.error.lower() or "timeout" in result.error.lower():
                    events.append(Event("evaluation_timeout", record.id, {"error": result.error}))
        else:
            self.usable += step.kind != "failed"
            self.fail_streak += 1
            self.last_error = step.error
            self._note_failure(step.parent_id, step.error)
            kind = {"failed": "proposal_failed", "duplicate": "duplicate", "rejected": "rejected"}[step.kind]
            events.append(Event(kind, step.program_id, {"error": step.error}))
        self._remember_attempt(step, result)
        if step.kind != "seed" and step.model and isinstance(self.proposer, AdaptiveProposer):
            parent, child = self.primary.get(step.parent_id or ""), self.primary.get(step.program_id or "")
            improved = step.kind == "evaluated" and parent is not None and child is not None and child > parent
            self.proposer.observe(step.model, improved, step.tokens_in + step.tokens_out, step.cost)
        if c.notes_interval and step.idx and step.idx % c.notes_interval == 0 and isinstance(self.proposer, NoteWriter):
            self._refresh_notes(step.idx, events, live)
        if c.migration_interval and step.idx and step.idx % c.migration_interval == 0:
            moves = self.population.migrate(c.migrants, step.idx)
            members += [(dst, pid, "migration") for pid, _, dst in moves]
            if moves:
                events.append(Event("migration", None, {"moves": [[p, s, d] for p, s, d in moves]}))
        self.applied = step.idx
        if live:
            self.archive.apply_step(step, record if step.kind == "evaluated" else None, events, members, version,
                                    meta={"next_index": self.applied + 1, "elapsed_s": self.elapsed()})
            if version is not None:
                self.archive.export_versions(self.run_dir)
            self.progress(self)

    def _place(self, step: Step, result: Result, record: ProgramRecord, members: list, events: list) -> tuple | None:
        """Put a correct program on its island(s); returns (id, score) when it is a new best."""
        values = fitness(result, self.objectives, self.config.campaign.bucket_noisy)
        if not result.correct or values is None:
            return None
        primary = self.objectives[0].value(result)
        self.primary[record.id] = float(primary)
        member = Member(record.id, values, primary=float(primary), order=step.idx, generation=record.generation,
                        cell=(grid_cell(result.metrics, self.config.campaign.map_elites)
                              if self.config.campaign.map_elites else None))
        before = self.population.best
        islands = range(self.config.campaign.islands) if step.kind == "seed" else [step.island]
        for island in islands:
            if self.population.add(island, member, record.code, step.idx):
                members.append((island, record.id, "seed" if step.kind == "seed" else "birth"))
        if step.kind == "seed":
            self.seed_member = member
        if self.population.best is not before and self.population.best is member:
            events.append(Event("new_best", record.id, {"score": member.primary}))
            return (record.id, member.primary)
        return None

    def _note_failure(self, parent: str | None, error: str) -> None:
        if parent:
            lines = self.recent_failures.setdefault(parent, [])
            lines.append(error.strip().splitlines()[0] if error.strip() else "unknown error")
            del lines[:-RECENT_FAILURES]

    def _fail_limit(self) -> int:
        """Failed proposals in a row that end the run: fewer while the proposer has never given a child,
        so an unreachable endpoint or a wrong model name stops the run in minutes, not at its budget."""
        limit = self.config.campaign.max_failed_proposals
        return limit if self.usable else min(limit, FIRST_FAILURES)

    def _why_stopped(self) -> tuple[str, str]:
        """(why the run stopped, the campaign budget field that stopped it or "")."""
        c = self.config.campaign
        if self.evaluations >= c.max_evaluations:
            return f"evaluation budget reached ({self.evaluations} of {c.max_evaluations})", "max_evaluations"
        if c.max_cost and self.cost >= c.max_cost:
            return f"cost budget reached (${self.cost:.2f} of ${c.max_cost:.2f})", "max_cost"
        if c.max_tokens and self.tokens >= c.max_tokens:
            return f"token budget reached ({self.tokens} of {c.max_tokens})", "max_tokens"
        if self.exhausted:
            return "the proposer reported its budget exhausted", ""
        if self.fail_streak >= self._fail_limit():
            if not self.usable:
                return (f"the proposer's first {self.fail_streak} proposals all failed (last: {self.last_error}); "
                        "check the proposer (for an LLM: the base URL, the model name and the API key variable)"), ""
            return (f"{self.fail_streak} proposals in a row gave nothing to evaluate (campaign.max_failed_proposals "
                    f"is {c.max_failed_proposals}; last: {self.last_error}); check the proposer"), ""
        return "finished", ""


PROGRESS_EVERY_S = 30.0  # seconds between progress lines in run.log (and on stdout without a terminal)


def _scrubbed(proposal: Proposal) -> Proposal:
    """A proposal with its texts scrubbed of secrets; the child's code is left alone (it is its identity)."""
    for name in ("patch_text", "name", "description", "diff", "error"):
        setattr(proposal, name, scrub(getattr(proposal, name)))
    proposal.extra = scrub_data(proposal.extra)
    return proposal


class ProgressBar:
    """A tqdm bar on stderr (shown on a terminal): evaluations, valid share, best score, cost.

    With `log`, a plain progress line also goes to it on the first step, on every new best and at least
    every `every_s` seconds: that is what a run without a terminal shows, and what `run.log` keeps."""

    def __init__(self, enabled: bool = True, log: Callable[[str], None] | None = None,
                 every_s: float = PROGRESS_EVERY_S) -> None:
        from tqdm import tqdm

        self.bar = tqdm(unit="eval", desc="evolve", file=sys.stderr, disable=None if enabled else True,
                        dynamic_ncols=True)
        self.log, self.every_s = log, every_s
        self._last_line = -float("inf")
        self._last_best: str | None = None

    def __call__(self, campaign: "Campaign") -> None:
        self.bar.total = campaign.config.campaign.max_evaluations
        self.bar.n = campaign.evaluations
        best = campaign.population.best
        text = f"valid {campaign.valid / max(1, campaign.evaluations):.0%} " if campaign.evaluations else ""
        text += f"best {best.primary:.4g} " if best else ""
        self.bar.set_postfix_str(text + f"cost ${campaign.cost:.2f}", refresh=False)
        self.bar.refresh()
        now = time.monotonic()
        best_id = best.id if best else None
        if self.log is not None and (best_id != self._last_best or now - self._last_line >= self.every_s):
            self._last_best, self._last_line = best_id, now
            if not self.bar.disable:
                self.bar.clear()
            new_best = best is not None and campaign.applied > 0 and best.order == campaign.applied
            self.log(progress_line(campaign, new_best))
            if not self.bar.disable:
                self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def progress_line(campaign: "Campaign", new_best: bool = False) -> str:
    """One line of numbers: evaluations against their budget, valid share, best, cost, time against its budget."""
    c = campaign.config.campaign
    best = campaign.population.best
    minutes = campaign.elapsed() / 60
    parts = [
        f"step {campaign.applied}",
        f"evaluations {campaign.evaluations}/{c.max_evaluations}",
        f"valid {campaign.valid / max(1, campaign.evaluations):.0%}",
        f"best {best.primary:.6g}" + (" (new)" if new_best else "") if best else "best -",
        f"cost ${campaign.cost:.2f}" + (f"/${c.max_cost:g}" if c.max_cost else ""),
        f"{minutes:.1f}" + (f"/{c.max_minutes:g}" if c.max_minutes else "") + " min",
    ]
    return "progress: " + ", ".join(parts)
