"""The LLM proposer: asks any OpenAI-compatible chat endpoint for a patch, and keeps asking until it applies.

One proposal is one conversation. The prompt (see `evolve.prompts`) goes to a model drawn from a weighted
ensemble; when the reply's patch does not apply, the patch engine's feedback goes back in the same
conversation, up to `max_patch_retries` times. Every HTTP call, failed or not, is appended to the run's
transcript, which `evolve.proposers.replay` can serve back later with no endpoint and no cost.

Endpoint faults are retried with backoff by the chat call (`evolve.proposers.chat`); when the tries run
out the proposal comes back with `error` set, so a campaign never dies of a flaky endpoint. Which kind of
request (diff, rewrite, crossover) and which model (a fixed weighted draw or the bandit of
`evolve.bandit`) are drawn here too.

Budget: each call's tokens and cost (from the per-model price table) are counted. Once `max_cost` dollars
or `max_tokens_total` tokens are spent, `exhausted` is True, no further call is made, and `propose`
returns a Proposal with `extra["budget_exhausted"] = True`. The loop checks `proposer.exhausted` (or
`budget_left()`) before asking for more.

The API key is read from the environment variable named in the config and is never written anywhere:
it is registered with `evolve.scrub`, which scrubs it (and every other secret of the environment, in
simple disguises too) out of every error text, log line and transcript record.
"""
from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path
from typing import Any, Callable

from evolve.prompts import Message, build_messages, prompt_hash
from evolve.proposers.base import Proposal, ProposalRequest
from evolve.proposers.budget import Budget
from evolve.proposers.chat import ChatClient
from evolve.proposers.conversation import Reply, converse, request_key
from evolve.proposers.llm_config import LLMConfig, ModelSpec
from evolve.proposers.transcript import TRANSCRIPT_VERSION, Transcript
from evolve.scrub import add_secret, scrub


class LLMProposer:
    """Proposals from an OpenAI-compatible endpoint (see the module docstring for faults and budget).

    `client` replaces the `openai.OpenAI` client (tests); `sleep` replaces `time.sleep` for backoff.
    """

    name = "llm"

    def __init__(
        self,
        config: LLMConfig | None = None,
        *,
        transcript: str | Path | None = None,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config or LLMConfig()
        self.models = self.config.model_specs()
        self.api_key = os.environ.get(self.config.api_key_env) or ""
        self.base_url = self.config.base_url or os.environ.get(self.config.base_url_env) or ""
        add_secret(self.config.api_key_env, self.api_key)
        self.budget = Budget(self.config.max_cost, self.config.max_tokens_total)
        self.transcript = Transcript(transcript or self.config.transcript or None)
        self.chat = ChatClient(self.config, self.budget, self.transcript, api_key=self.api_key,
                               base_url=self.base_url, client=client, sleep=sleep)
        from evolve.bandit import ModelBandit

        arms = [m.name for m in self.models if m.weight > 0]
        self.bandit = ModelBandit(arms) if self.config.ensemble == "bandit" else None
        self.transcript.write(
            {
                "kind": "header",
                "version": TRANSCRIPT_VERSION,
                "proposer": self.name,
                "models": [m.name for m in self.models],
                "prompt_max_chars": self.config.prompt_max_chars,
                "max_patch_retries": self.config.max_patch_retries,
            }
        )

    # ---- the loop's view ---------------------------------------------------------------------------
    @property
    def exhausted(self) -> bool:
        """True once the dollar or token budget is spent: no further proposal will call the endpoint."""
        return self.budget.exhausted

    def budget_left(self) -> dict[str, float | None]:
        """Dollars and tokens still allowed (None where there is no limit)."""
        return self.budget.left()

    @property
    def spent(self) -> dict[str, float]:
        return {"cost": self.budget.cost, "tokens": float(self.budget.tokens)}

    # ---- proposing ---------------------------------------------------------------------------------
    def choose_model(self, seed: int) -> ModelSpec:
        rng = random.Random(f"model:{seed}")
        return rng.choices(self.models, weights=[m.weight for m in self.models], k=1)[0]

    # ---- the adaptive ensemble (evolve.proposers.base.AdaptiveProposer) ------------------------------
    def pick_model(self, seed: int) -> str:
        if self.bandit is None or len(self.bandit.arms) < 2:
            return self.choose_model(seed).name
        return self.bandit.choose(seed)

    def observe(self, model: str, improved: bool, tokens: int, cost: float) -> None:
        if self.bandit is not None:
            self.bandit.observe(model, improved, tokens, cost)

    def write_notes(self, history: list[str], previous: str, seed: int) -> str:
        """Meta-recommendations (evolve.proposers.base.NoteWriter): one call, recorded in the transcript."""
        from evolve.prompt_sections import notes_messages
        from evolve.proposers.base import ProgramView

        if self.budget.exhausted:
            return ""
        request = ProposalRequest(parent=ProgramView("notes", ""), seed=seed, generation=-1)
        model = self.choose_model(seed)  # a weighted draw: notes do not feed the bandit
        reply = self.chat.call(model, notes_messages(history, previous), 1, request, random.Random(f"jitter:{seed}"))
        self.transcript.write({"kind": "notes", "seed": seed, "model": reply.model, "ok": reply.ok,
                               "error": reply.error, "tokens_in": reply.tokens_in, "tokens_out": reply.tokens_out})
        return scrub(reply.text) if reply.ok else ""

    def choose_mode(self, seed: int) -> str:
        """diff, rewrite or crossover, drawn by the configured mix with the proposal's seed."""
        modes = [m for m in ("diff", "rewrite", "crossover") if float(self.config.mix.get(m, 0)) > 0]
        rng = random.Random(f"mode:{seed}")
        return rng.choices(modes, weights=[float(self.config.mix[m]) for m in modes], k=1)[0]

    def propose(self, request: ProposalRequest) -> Proposal:
        mode = self.choose_mode(request.seed)
        if mode == "crossover" and not request.inspirations:
            mode = "diff"  # no second parent to cross with
        messages = build_messages(request, self.config.prompt_max_chars, mode)
        first_hash = prompt_hash(messages)
        if self.budget.exhausted:
            proposal = Proposal(proposer=self.name, error=self.budget.describe(), attempts=0,
                                extra={"budget_exhausted": True, "prompt_hash": first_hash})
            self._record_outcome(request, first_hash, proposal)
            return proposal
        named = [m for m in self.models if m.name == request.model]
        model = named[0] if named else self.choose_model(request.seed)
        jitter = random.Random(f"jitter:{request.seed}")

        def send(msgs: list[Message], attempt: int) -> Reply:
            return self.chat.call(model, msgs, attempt, request, jitter)

        try:
            proposal = converse(request, messages, send, 1 + max(0, self.config.max_patch_retries), self.name)
        except Exception as exc:  # never let a proposer bug end the campaign; say what happened
            proposal = Proposal(proposer=self.name, model=model.name,
                                error=scrub(f"LLM proposer failed: {type(exc).__name__}: {exc}"))
        proposal.model = proposal.model or model.name
        proposal.error = scrub(proposal.error)
        proposal.patch_text = scrub(proposal.patch_text)
        proposal.extra.setdefault("budget_exhausted", False)
        proposal.extra["mode"] = mode
        if self.budget.exhausted:
            proposal.extra["budget_exhausted"] = True
        self._record_outcome(request, first_hash, proposal)
        return proposal

    def _record_outcome(self, request: ProposalRequest, first_hash: str, proposal: Proposal) -> None:
        self.transcript.write(
            {
                "kind": "proposal",
                "generation": request.generation,
                "island": request.island,
                "seed": request.seed,
                "parent": request.parent.id,
                "prompt_hash": first_hash,
                "request_key": request_key(request),
                "model": proposal.model,
                "attempts": proposal.attempts,
                "ok": proposal.ok,
                "error": proposal.error,
                "patch_name": proposal.name,
                "mode": proposal.extra.get("mode", ""),
                "child_sha256": hashlib.sha256(proposal.child_code.encode()).hexdigest() if proposal.ok else "",
                "tokens_in": proposal.tokens_in,
                "tokens_out": proposal.tokens_out,
                "cost": proposal.cost,
                "budget_exhausted": bool(proposal.extra.get("budget_exhausted")),
            }
        )
