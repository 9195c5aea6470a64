"""One proposal as one conversation: ask, apply the reply's patch, and send the patch error back on failure.

Shared by the LLM proposer (whose `send` calls the endpoint) and the replay proposer (whose `send` answers
from a transcript), so both build byte-identical children from the same replies.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Callable

from evolve.prompts import Message, patch_retry_message, prompt_hash
from evolve.proposers.base import Proposal, ProposalRequest
from evolve.scrub import scrub


@dataclass
class Reply:
    """What one call gave: the text, or why there is none. `budget_exhausted` marks a call not made."""

    text: str = ""
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    error: str = ""
    budget_exhausted: bool = False

    @property
    def ok(self) -> bool:
        return not self.error


Send = Callable[[list[Message], int], Reply]  # (messages, patch attempt 1..) -> reply


def request_key(request: ProposalRequest) -> str:
    """sha256 of what a proposal is about, without the measured numbers a prompt also shows.

    Prompts carry wall-clock metrics (runtime), which differ between two runs of the same campaign, so a
    replay cannot find every reply by prompt hash alone; this key (seed, generation, parent and
    inspirations by id) is its fallback. The replayed child is still checked against the recorded one.
    """
    identity = {
        "seed": request.seed,
        "generation": request.generation,
        "parent": request.parent.id,
        "inspirations": [view.id for view in request.inspirations],
        "entry": request.entry_function,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def patch_text_of(reply: str) -> str:
    """The part of a reply the patch engine should read: reasoning models' <think> sections removed."""
    return _THINK_RE.sub("", reply).strip() + "\n"


def converse(
    request: ProposalRequest,
    messages: list[Message],
    send: Send,
    max_attempts: int,
    proposer: str,
    stop_after: int | None = None,
) -> Proposal:
    """Ask, apply, and on a patch error ask again in the same conversation (at most `max_attempts` asks).

    `stop_after` ends the conversation earlier without changing what the model is told (replay uses it
    to stop where the recording stopped).
    """
    from evolve.patch import PatchError, apply_patch

    proposal = Proposal(proposer=proposer, attempts=0)
    errors: list[str] = []
    proposal.extra.update(prompt_hash=prompt_hash(messages), attempt_errors=errors)
    for attempt in range(1, min(max_attempts, stop_after or max_attempts) + 1):
        proposal.attempts = attempt
        reply = send(messages, attempt)
        proposal.model = reply.model or proposal.model
        proposal.tokens_in += reply.tokens_in
        proposal.tokens_out += reply.tokens_out
        proposal.cost += reply.cost
        if not reply.ok:
            proposal.error = reply.error
            proposal.extra["budget_exhausted"] = reply.budget_exhausted
            return proposal
        proposal.patch_text = reply.text
        try:
            child = apply_patch(request.parent.code, patch_text_of(reply.text), entry_function=request.entry_function)
        except PatchError as exc:
            errors.append(str(exc))
            left = max_attempts - attempt
            if left:
                messages = messages + [
                    {"role": "assistant", "content": scrub(reply.text)},
                    {"role": "user", "content": patch_retry_message(exc.feedback(), left)},
                ]
            continue
        except Exception as exc:  # a bug in the engine must not end the campaign
            errors.append(f"patch engine failed: {type(exc).__name__}: {exc}")
            break
        proposal.child_code = child.code
        proposal.name, proposal.description, proposal.diff = child.name, child.description, child.diff
        proposal.extra["notes"] = list(child.notes)
        proposal.error = ""
        return proposal
    proposal.error = f"patch did not apply after {proposal.attempts} attempt(s): {errors[-1] if errors else 'no reply'}"
    return proposal
