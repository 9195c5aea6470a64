"""The LLM proposer: asks any OpenAI-compatible chat endpoint for a patch, and keeps asking until it applies.

One proposal is one conversation. The prompt (see `evolve.prompts`) goes to a model drawn from a weighted
ensemble; when the reply's patch does not apply, the patch engine's feedback goes back in the same
conversation, up to `max_patch_retries` times. Every HTTP call, failed or not, is appended to the run's
transcript, which `evolve.proposers.replay` can serve back later with no endpoint and no cost.

Endpoint faults (timeouts, 429, 5xx, refused connections, malformed or empty replies) are retried with
exponential backoff and jitter, honouring Retry-After; when the tries run out the proposal comes back with
`error` set, so a campaign never dies of a flaky endpoint. Models that reject `temperature` or want
`max_completion_tokens` are adapted to on the first 400 that names the parameter, and remembered.

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
import json
import logging
import math
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable

from evolve.errors import UserError
from evolve.options import validate
from evolve.prompts import DEFAULT_MAX_CHARS, Message, build_messages, patch_retry_message, prompt_hash
from evolve.proposers.base import Proposal, ProposalRequest
from evolve.scrub import add_secret, scrub, scrub_data

log = logging.getLogger(__name__)

TRANSCRIPT_VERSION = 1
MAX_RETRY_AFTER_S = 600.0  # a Retry-After beyond this is treated as this (a broken header must not hang a run)
RETRIABLE_STATUS = {408, 409, 425, 429}


def _meta(help: str) -> dict[str, str]:
    return {"help": help}


@dataclass
class ModelSpec:
    """One model of the ensemble: how often it is drawn and what it costs (dollars per million tokens)."""

    name: str
    weight: float = 1.0
    price_in: float = 0.0
    price_out: float = 0.0

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.price_in + tokens_out * self.price_out) / 1e6


@dataclass
class LLMConfig:
    """Settings of the LLM proposer. `models` entries are tables {name, weight, price_in, price_out}."""

    models: list[dict[str, Any]] = field(
        default_factory=lambda: [{"name": "gpt-4o-mini", "weight": 1.0, "price_in": 0.15, "price_out": 0.60}],
        metadata=_meta("ensemble: tables {name, weight, price_in, price_out}; prices in $ per million tokens"),
    )
    base_url: str = field(default="", metadata=_meta("endpoint URL ending in /v1; empty: $base_url_env, else OpenAI"))
    api_key_env: str = field(default="OPENAI_API_KEY", metadata=_meta("environment variable holding the API key"))
    base_url_env: str = field(default="OPENAI_BASE_URL", metadata=_meta("variable read when base_url is empty"))
    temperature: float = field(default=0.8, metadata=_meta("sampling temperature; negative: do not send one"))
    max_tokens: int = field(default=8192, metadata=_meta("reply token limit; 0: do not send one"))
    timeout_s: float = field(default=180.0, metadata=_meta("seconds one HTTP call may take"))
    max_retries: int = field(default=4, metadata=_meta("retries of a call after a timeout, 429, 5xx or bad reply"))
    max_patch_retries: int = field(default=2, metadata=_meta("times a patch that does not apply is sent back to fix"))
    max_cost: float = field(default=0.0, metadata=_meta("stop proposing after this many dollars; 0: no limit"))
    max_tokens_total: int = field(default=0, metadata=_meta("stop proposing after this many tokens in+out; 0: none"))
    transcript: str = field(default="", metadata=_meta("transcript.jsonl path; empty: the run directory's"))
    prompt_max_chars: int = field(default=DEFAULT_MAX_CHARS, metadata=_meta("prompt size target in characters"))
    backoff_base_s: float = field(default=1.0, metadata=_meta("first retry delay; doubles each retry, with jitter"))
    backoff_max_s: float = field(default=60.0, metadata=_meta("longest retry delay (Retry-After may ask for more)"))
    extra_body: dict[str, Any] = field(default_factory=dict, metadata=_meta("extra request fields, e.g. top_k (vLLM)"))
    mix: dict[str, float] = field(
        default_factory=lambda: {"diff": 0.7, "rewrite": 0.15, "crossover": 0.15},
        metadata=_meta("how often each kind of request is made: diff (a patch), rewrite (a whole program), "
                       "crossover (a patch combining the parent with a second parent)"),
    )
    ensemble: str = field(default="bandit", metadata=_meta("model choice: bandit (learns improvements per token; "
                                                           "evolve/bandit.py) or weights (a fixed weighted draw)"))

    def model_specs(self) -> list[ModelSpec]:
        """The ensemble, checked: a bad entry is a `UserError` naming it."""
        if not self.models:
            raise UserError("proposer.llm.models is empty; give at least one {name = \"...\"} table")
        specs = []
        for i, entry in enumerate(self.models):
            if isinstance(entry, ModelSpec):
                specs.append(entry)
                continue
            if isinstance(entry, str):
                entry = {"name": entry}
            if not isinstance(entry, dict) or not entry.get("name"):
                raise UserError(f"proposer.llm.models[{i}] must be a table with a 'name', got {entry!r}")
            spec = validate(ModelSpec, entry, name=lambda key, i=i: f"proposer.llm.models[{i}].{key}")
            if spec.weight < 0 or spec.price_in < 0 or spec.price_out < 0:
                raise UserError(f"proposer.llm.models[{i}]: weight and prices must be >= 0, got {entry!r}")
            specs.append(spec)
        unknown_modes = set(self.mix) - {"diff", "rewrite", "crossover"}
        if unknown_modes or any(float(v) < 0 for v in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise UserError(f"proposer.llm.mix must weigh diff, rewrite and crossover (>= 0, not all 0), got {self.mix!r}")
        if self.ensemble not in ("bandit", "weights"):
            raise UserError(f"proposer.llm.ensemble must be bandit or weights, got {self.ensemble!r}")
        if sum(s.weight for s in specs) <= 0:
            raise UserError("proposer.llm.models: at least one model needs a weight above 0")
        if self.max_cost > 0:
            unpriced = [s.name for s in specs if s.weight > 0 and s.price_in == 0 and s.price_out == 0]
            if unpriced:
                raise UserError(
                    f"proposer.llm.max_cost is set but model(s) {', '.join(unpriced)} have no price; set "
                    "price_in/price_out ($ per million tokens) or use max_tokens_total instead"
                )
        return specs


# --------------------------------------------------------------------------------------------------
# secrets, budget, transcript


class Budget:
    """Dollars and tokens spent across all proposals, thread-safe. A limit of 0 means none."""

    def __init__(self, max_cost: float = 0.0, max_tokens: int = 0) -> None:
        self.max_cost = max_cost
        self.max_tokens = max_tokens
        self.cost = 0.0
        self.tokens = 0
        self._lock = threading.Lock()

    def add(self, tokens: int, cost: float) -> None:
        with self._lock:
            self.tokens += tokens
            self.cost += cost

    @property
    def exhausted(self) -> bool:
        return (self.max_cost > 0 and self.cost >= self.max_cost) or (
            self.max_tokens > 0 and self.tokens >= self.max_tokens
        )

    def left(self) -> dict[str, float | None]:
        """Dollars and tokens still allowed (None: no limit)."""
        return {
            "cost": max(0.0, self.max_cost - self.cost) if self.max_cost > 0 else None,
            "tokens": max(0, self.max_tokens - self.tokens) if self.max_tokens > 0 else None,
        }

    def describe(self) -> str:
        parts = []
        if self.max_cost > 0:
            parts.append(f"${self.cost:.4f} of ${self.max_cost:.4f}")
        if self.max_tokens > 0:
            parts.append(f"{self.tokens} of {self.max_tokens} tokens")
        return "budget exhausted: spent " + " and ".join(parts)


class Transcript:
    """Append-only JSON lines, one record per HTTP call plus one per finished proposal; thread-safe."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **record}
        line = json.dumps(scrub_data(record), ensure_ascii=False, sort_keys=False)
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()


# --------------------------------------------------------------------------------------------------
# one conversation, shared with the replay proposer


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


# --------------------------------------------------------------------------------------------------
# the endpoint


class _CallFault(Exception):
    """A failed call, classified. `retry_after` comes from the server; `adapt` names a parameter fix."""

    def __init__(self, message: str, retriable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.retry_after = retry_after
        self.usage: dict[str, Any] = {}  # tokens billed for a reply that was unusable (empty, no choices)


def _retry_after(headers: Any) -> float | None:
    """Seconds asked for by `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = parsedate_to_datetime(value)
            return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except Exception:
        return None


def _error_text(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            message = str(inner["message"])
        elif isinstance(inner, str):
            message = inner
    return " ".join(str(message).split())[:500]


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
        self._sleep = sleep
        self.api_key = os.environ.get(self.config.api_key_env) or ""
        self.base_url = self.config.base_url or os.environ.get(self.config.base_url_env) or ""
        add_secret(self.config.api_key_env, self.api_key)
        self.budget = Budget(self.config.max_cost, self.config.max_tokens_total)
        self.transcript = Transcript(transcript or self.config.transcript or None)
        self._client = client
        self._client_lock = threading.Lock()
        self._adapt_lock = threading.Lock()
        # per model: which token-limit parameter it takes, and whether it refuses `temperature`
        self._token_param: dict[str, str] = {}
        self._no_temperature: set[str] = set()
        from evolve.bandit import ModelBandit

        self.bandit = ModelBandit([m.name for m in self.models if m.weight > 0]) if self.config.ensemble == "bandit" else None
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
        reply = self._call(model, notes_messages(history, previous), 1, request, random.Random(f"jitter:{seed}"))
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
            return self._call(model, msgs, attempt, request, jitter)

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

    # ---- one patch attempt: the HTTP call with its retries ------------------------------------------
    def _params(self, model: str) -> dict[str, Any]:
        params: dict[str, Any] = {}
        with self._adapt_lock:
            if self.config.temperature >= 0 and model not in self._no_temperature:
                params["temperature"] = self.config.temperature
            if self.config.max_tokens > 0:
                params[self._token_param.get(model, "max_tokens")] = self.config.max_tokens
        if self.config.extra_body:
            params["extra_body"] = dict(self.config.extra_body)
        return params

    def _adapt(self, model: str, params: dict[str, Any], message: str) -> str:
        """Change what this model is sent after a 400 naming a parameter; '' when nothing applies."""
        text = message.lower()
        with self._adapt_lock:
            if "temperature" in params and "temperature" in text:
                self._no_temperature.add(model)
                return "dropped temperature"
            if "max_tokens" in params and "max_tokens" in text:
                self._token_param[model] = "max_completion_tokens"
                return "sent max_completion_tokens instead of max_tokens"
            if "max_completion_tokens" in params and "max_completion_tokens" in text:
                self._token_param[model] = "max_tokens"
                return "sent max_tokens instead of max_completion_tokens"
        return ""

    def _get_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(
                    api_key=self.api_key or "no-key-set",
                    base_url=self.base_url or None,
                    timeout=self.config.timeout_s,
                    max_retries=0,  # retries are ours: they are logged, budgeted and backed off with jitter
                )
            return self._client

    def _backoff(self, fault_no: int, retry_after: float | None, jitter: random.Random) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        base = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (fault_no - 1))
        return base * (0.5 + 0.5 * jitter.random())

    def _call(
        self, model: ModelSpec, messages: list[Message], attempt: int, request: ProposalRequest, jitter: random.Random
    ) -> Reply:
        h = prompt_hash(messages)
        base = {"kind": "call", "generation": request.generation, "island": request.island, "seed": request.seed,
                "model": model.name, "prompt_hash": h, "request_key": request_key(request), "attempt": attempt}
        faults = 0
        adaptations = 0
        tokens_in = tokens_out = 0
        cost = 0.0
        try_no = 0
        while True:
            if self.budget.exhausted:
                reason = self.budget.describe()
                self.transcript.write({"kind": "skip", "generation": request.generation, "prompt_hash": h,
                                       "request_key": request_key(request), "attempt": attempt, "reason": reason})
                return Reply(model=model.name, error=reason, budget_exhausted=True,
                             tokens_in=tokens_in, tokens_out=tokens_out, cost=cost)
            try_no += 1
            params = self._params(model.name)
            record: dict[str, Any] = {**base, "try": try_no, "params": {k: v for k, v in params.items()}}
            started = time.monotonic()
            try:
                text, usage, finish = self._request(model.name, messages, params)
                if usage.get("estimated"):
                    usage["prompt_tokens"] = math.ceil(sum(len(m["content"]) for m in messages) / 4)
                latency = time.monotonic() - started
                t_in, t_out = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
                c = model.cost(t_in, t_out)
                self.budget.add(t_in + t_out, c)
                tokens_in, tokens_out, cost = tokens_in + t_in, tokens_out + t_out, cost + c
                self.transcript.write({**record, "messages": messages, "reply": text, "finish_reason": finish,
                                       "usage": usage, "cost": c, "latency_s": round(latency, 4), "error": "",
                                       "final": True})
                return Reply(text=text, model=model.name, tokens_in=tokens_in, tokens_out=tokens_out, cost=cost)
            except _CallFault as fault:
                latency = time.monotonic() - started
                error = scrub(str(fault))
                usage = fault.usage
                if usage:
                    t_in, t_out = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
                    self.budget.add(t_in + t_out, model.cost(t_in, t_out))
                adapted = ""
                if not fault.retriable and adaptations < 3:
                    adapted = self._adapt(model.name, params, str(fault))
                retry = bool(adapted) or (fault.retriable and faults < self.config.max_retries)
                outcome = "" if retry else f"{model.name}: {error}" + (f" (after {try_no} tries)" if try_no > 1 else "")
                self.transcript.write({**record, "messages": messages, "reply": None, "usage": usage,
                                       "latency_s": round(latency, 4), "error": error, "adapted": adapted,
                                       "final": not retry, "outcome_error": outcome})
                if adapted:
                    adaptations += 1
                    log.info("model %s: %s after: %s", model.name, adapted, error)
                    continue
                if not retry:
                    return Reply(model=model.name, error=outcome, tokens_in=tokens_in, tokens_out=tokens_out, cost=cost)
                faults += 1
                delay = self._backoff(faults, fault.retry_after, jitter)
                log.warning("model %s: %s; retry %d/%d in %.1fs", model.name, error, faults,
                            self.config.max_retries, delay)
                self._sleep(delay)

    def _request(self, model: str, messages: list[Message], params: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
        """One chat-completions call: (text, usage, finish_reason), or a classified `_CallFault`."""
        import openai

        where = self.base_url or "the OpenAI API"
        try:
            response = self._get_client().chat.completions.create(model=model, messages=messages, **params)
        except openai.APITimeoutError:
            raise _CallFault(f"timed out after {self.config.timeout_s:g}s waiting for {where}", True) from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise _CallFault(
                f"cannot reach {where} ({type(cause).__name__}: {' '.join(str(cause).split())[:200]}); check "
                f"proposer.llm.base_url or ${self.config.base_url_env}", True
            ) from None
        except openai.AuthenticationError as exc:
            raise _CallFault(
                f"{where} rejected the API key (401: {_error_text(exc)}); set ${self.config.api_key_env}", False
            ) from None
        except openai.NotFoundError as exc:
            raise _CallFault(f"{where} does not serve model '{model}' (404: {_error_text(exc)})", False) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            retriable = status in RETRIABLE_STATUS or status >= 500
            raise _CallFault(f"HTTP {status} from {where}: {_error_text(exc)}", retriable,
                             _retry_after(getattr(exc.response, "headers", None))) from None
        except Exception as exc:  # unparseable body and the like
            raise _CallFault(f"malformed reply from {where} ({type(exc).__name__}: {str(exc)[:200]})", True) from None
        return self._read(response, where)

    @staticmethod
    def _read(response: Any, where: str) -> tuple[str, dict[str, Any], str]:
        usage: dict[str, Any] = {}
        raw_usage = getattr(response, "usage", None)
        if raw_usage is not None:
            usage = {
                "prompt_tokens": int(getattr(raw_usage, "prompt_tokens", 0) or 0),
                "completion_tokens": int(getattr(raw_usage, "completion_tokens", 0) or 0),
            }
        choices = getattr(response, "choices", None)
        fault: _CallFault | None = None
        text: Any = None
        if not isinstance(choices, list) or not choices:
            fault = _CallFault(f"malformed reply from {where}: no choices", True)
        else:
            message = getattr(choices[0], "message", None)
            text = getattr(message, "content", None) if message is not None else None
            if not isinstance(text, str) or not text.strip():
                finish = getattr(choices[0], "finish_reason", None)
                fault = _CallFault(f"empty reply from {where} (finish_reason {finish})", True)
        if fault is not None:
            fault.usage = usage
            raise fault
        if not usage:  # some local servers omit usage: estimate, and say so
            usage = {"prompt_tokens": 0, "completion_tokens": math.ceil(len(text) / 4), "estimated": True}
        return text, usage, str(getattr(choices[0], "finish_reason", "") or "")


# --------------------------------------------------------------------------------------------------
# the check before a campaign

CHECK_TIMEOUT_S = 10.0  # the check is one small GET: a live endpoint answers well within this
SHOWN_MODELS = 8  # model ids named in an "unknown model" error


def check_endpoint(config: LLMConfig, timeout_s: float = CHECK_TIMEOUT_S) -> list[str]:
    """One `GET /models`, no retries, before a campaign starts; returns the model ids the endpoint offers.

    A campaign finds a missing key, a dead server, a wrong URL or a misspelt model only after minutes of
    retried proposals; this finds each in seconds and raises a `UserError` naming what to fix."""
    import openai

    specs = config.model_specs()
    key = os.environ.get(config.api_key_env) or ""
    base = config.base_url or os.environ.get(config.base_url_env) or ""
    where = base or "the OpenAI API"
    if key:
        add_secret(config.api_key_env, key)  # whatever the variable is called, its value never reaches a line
    if not key and not base:
        raise UserError(f"${config.api_key_env} is not set: export your API key in it, or give --base-url for a "
                        "local OpenAI-compatible server (proposer.llm.api_key_env names another variable)")
    client = openai.OpenAI(api_key=key or "no-key-set", base_url=base or None, timeout=timeout_s, max_retries=0)
    try:
        offered = [str(m.id) for m in client.models.list().data]
    except openai.APITimeoutError:
        raise UserError(f"{where} did not answer GET /models within {timeout_s:g}s; check --base-url "
                        f"(proposer.llm.base_url or ${config.base_url_env}) and that the server is up") from None
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        raise UserError(scrub(
            f"cannot reach {where} ({type(cause).__name__}: {' '.join(str(cause).split())[:160]}); check --base-url "
            f"(proposer.llm.base_url or ${config.base_url_env}) and that the server is running")) from None
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        what = "rejected the API key" if key else "needs an API key"
        raise UserError(scrub(f"{where} {what} ({exc.status_code}: {_error_text(exc)}); set "
                                     f"${config.api_key_env} to a valid key")) from None
    except openai.NotFoundError:
        raise UserError(f"{where} has no /models (404): the base URL looks wrong; an OpenAI-compatible URL "
                        "usually ends in /v1, e.g. http://127.0.0.1:8000/v1") from None
    except openai.APIStatusError as exc:
        raise UserError(scrub(f"{where} answered GET /models with HTTP {exc.status_code}: "
                                     f"{_error_text(exc)}; check the server and --base-url")) from None
    except Exception as exc:  # a body that is not the OpenAI shape: not an OpenAI-compatible endpoint
        raise UserError(scrub(f"{where} gave an unreadable answer to GET /models ({type(exc).__name__}); "
                                     "is it an OpenAI-compatible endpoint (a URL ending in /v1)?")) from None
    known = set(offered) | {m.removesuffix(":latest") for m in offered}  # Ollama serves NAME as NAME:latest
    for spec in specs:
        if offered and spec.weight > 0 and spec.name not in known:
            shown = ", ".join(offered[:SHOWN_MODELS]) + (f" and {len(offered) - SHOWN_MODELS} more"
                                                          if len(offered) > SHOWN_MODELS else "")
            raise UserError(f"{where} does not serve model '{spec.name}'; it offers: {shown}; fix --model "
                            "(or proposer.llm.models)")
    return offered
