"""The replay proposer: serves the replies a transcript recorded, so a campaign re-runs exactly for free.

It runs the very conversation the LLM proposer runs (`evolve.proposers.conversation.converse`: build the prompt,
apply the reply's patch, send the patch error back on failure), but each "call" is answered from the
transcript by the hash of the messages plus the patch attempt number. The same campaign seed therefore
gives the same prompts, the same replies and, through the same patch engine, byte-identical children;
each replayed child is checked against the sha256 the recording stored.

Prompts also show measured wall-clock numbers (runtime), which no rerun reproduces. When the prompt hash
is not in the transcript, the reply is looked up by the request's identity instead (`request_key`: seed,
generation, parent and inspirations by id), so a rerun of the same campaign still finds every reply.

A prompt the transcript does not hold means the campaign differs from the recorded one (another seed,
config, archive or code): `propose` raises `ReplayMismatch`, a `UserError` naming the generation and the
prompt hash, because carrying on would silently compare two different runs.
"""
from __future__ import annotations

import hashlib
import threading
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from evolve.errors import UserError
from evolve.prompts import DEFAULT_MAX_CHARS, Message, build_messages, prompt_hash
from evolve.proposers.base import Proposal, ProposalRequest
from evolve.proposers.conversation import Reply, converse, request_key
from evolve.proposers.transcript import read_transcript


class ReplayMismatch(UserError):
    """The campaign asked for something the transcript never recorded."""


class _Entry:
    """A recorded item reachable from two indexes (prompt hash, request key); served once."""

    __slots__ = ("value", "used")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.used = False


def _take(*queues: deque[_Entry] | None) -> Any:
    """The first unused entry of the first queue that has one (marked used), else None."""
    for queue in queues:
        while queue:
            entry = queue.popleft()
            if not entry.used:
                entry.used = True
                return entry.value
    return None


class ReplayProposer:
    """Answers proposals from a recorded transcript. The prompt size and patch retries are the recording's
    (from its header record); `prompt_max_chars` overrides the size for transcripts without a header.
    """

    name = "replay"

    def __init__(self, transcript: str | Path, *, prompt_max_chars: int | None = None) -> None:
        self.path = Path(transcript)
        records = read_transcript(self.path)
        header = next((r for r in records if r.get("kind") == "header"), {})
        self.prompt_max_chars = int(prompt_max_chars or header.get("prompt_max_chars") or DEFAULT_MAX_CHARS)
        self.max_attempts = 1 + int(header.get("max_patch_retries", 2))
        # (prompt hash or request key, attempt) -> what the last try of that call gave, in recording order
        self._replies: dict[tuple[str, int], deque[_Entry]] = defaultdict(deque)
        # first prompt hash or request key -> the recorded outcome of each proposal
        self._outcomes: dict[str, deque[_Entry]] = defaultdict(deque)
        self._lock = threading.Lock()
        for r in records:
            kind = r.get("kind")
            if kind == "call" and r.get("final"):
                entry = _Entry(self._reply_of(r))
            elif kind == "skip":
                entry = _Entry(Reply(error=str(r.get("reason", "budget exhausted")), budget_exhausted=True))
            elif kind == "proposal":
                entry = _Entry(r)
                for key in (r.get("prompt_hash"), r.get("request_key")):
                    if key:
                        self._outcomes[key].append(entry)
                continue
            else:
                continue
            for key in (r.get("prompt_hash"), r.get("request_key")):
                if key:
                    self._replies[(key, int(r["attempt"]))].append(entry)
        if not self._outcomes:
            raise UserError(f"transcript {self.path} holds no recorded proposals; nothing to replay")

    @staticmethod
    def _reply_of(record: dict[str, Any]) -> Reply:
        model = str(record.get("model", ""))
        if record.get("error"):
            return Reply(model=model, error=str(record.get("outcome_error") or f"{model}: {record['error']}"))
        usage = record.get("usage") or {}
        return Reply(
            text=str(record.get("reply", "")),
            model=model,
            tokens_in=int(usage.get("prompt_tokens", 0)),
            tokens_out=int(usage.get("completion_tokens", 0)),
            cost=float(record.get("cost", 0.0)),
        )

    def _mismatch(self, request: ProposalRequest, h: str, what: str) -> ReplayMismatch:
        return ReplayMismatch(
            f"replay: generation {request.generation} {what} prompt sha256 {h}, which transcript {self.path} "
            "does not hold (nor a proposal with this seed, parent and inspirations); replay with the recorded "
            "run's seed, config and code"
        )

    def propose(self, request: ProposalRequest) -> Proposal:
        messages = build_messages(request, self.prompt_max_chars)
        first = prompt_hash(messages)
        rkey = request_key(request)
        with self._lock:
            outcome = _take(self._outcomes.get(first), self._outcomes.get(rkey))
        if outcome is None:
            raise self._mismatch(request, first, "asked for")

        def send(msgs: list[Message], attempt: int) -> Reply:
            h = prompt_hash(msgs)
            with self._lock:
                reply = _take(self._replies.get((h, attempt)), self._replies.get((rkey, attempt)))
            if reply is None:
                raise self._mismatch(request, h, f"(patch attempt {attempt}) asked for")
            return reply

        attempts = int(outcome.get("attempts", 1))
        if attempts == 0:  # the recording refused this proposal before any call (budget)
            proposal = Proposal(proposer=self.name, error=str(outcome.get("error", "")), attempts=0)
        else:
            proposal = converse(request, messages, send, self.max_attempts, self.name, stop_after=attempts)
        recorded_sha = outcome.get("child_sha256") or ""
        replayed_sha = hashlib.sha256(proposal.child_code.encode()).hexdigest() if proposal.ok else ""
        if recorded_sha != replayed_sha:
            raise ReplayMismatch(
                f"replay: generation {request.generation} (prompt sha256 {first}) gave a different child than the "
                f"recording ({replayed_sha[:12] or 'none'} vs {recorded_sha[:12] or 'none'}); the patch engine or "
                "the parent changed since it was recorded"
            )
        proposal.extra.update(
            replayed=True,
            recorded_cost=proposal.cost,
            budget_exhausted=bool(outcome.get("budget_exhausted")),
        )
        proposal.cost = 0.0
        return proposal

    def write_notes(self, history: list[str], previous: str, seed: int) -> str:
        """The recorded notes for the same request (evolve.proposers.base.NoteWriter); '' when none were recorded."""
        from evolve.prompt_sections import notes_messages

        h = prompt_hash(notes_messages(history, previous))
        with self._lock:
            reply = _take(self._replies.get((h, 1)))
        return reply.text if reply is not None and reply.ok else ""

    @property
    def exhausted(self) -> bool:
        """Replay has no budget of its own; the recording's exhaustion shows on the replayed proposals."""
        return False

    def budget_left(self) -> dict[str, float | None]:
        return {"cost": None, "tokens": None}
