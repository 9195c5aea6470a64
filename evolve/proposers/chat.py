"""One chat call of the LLM proposer, with its retries: classified faults, backoff, adaptation and accounting.

Endpoint faults (timeouts, 429, 5xx, refused connections, malformed or empty replies) are retried with
exponential backoff and jitter, honouring Retry-After; when the tries run out the call comes back as a
`Reply` with `error` set, so a campaign never dies of a flaky endpoint. Models that reject `temperature`
or want `max_completion_tokens` are adapted to on the first 400 that names the parameter, and remembered.
Each try's tokens and cost go to the shared `Budget` and each try is one transcript record; once the
budget is spent no call is made.
"""
from __future__ import annotations

import logging
import math
import random
import threading
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable

from evolve.prompts import Message, prompt_hash
from evolve.proposers.base import ProposalRequest
from evolve.proposers.budget import Budget
from evolve.proposers.conversation import Reply, request_key
from evolve.proposers.llm_config import LLMConfig, ModelSpec
from evolve.proposers.transcript import Transcript
from evolve.scrub import scrub

log = logging.getLogger("evolve.proposers.llm")  # the proposer's log name, which run logs and users filter on

MAX_RETRY_AFTER_S = 600.0  # a Retry-After beyond this is treated as this (a broken header must not hang a run)
RETRIABLE_STATUS = {408, 409, 425, 429}


class CallFault(Exception):
    """A failed call, classified. `retry_after` comes from the server; `adapt` names a parameter fix."""

    def __init__(self, message: str, retriable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.retry_after = retry_after
        self.usage: dict[str, Any] = {}  # tokens billed for a reply that was unusable (empty, no choices)


def retry_after_s(headers: Any) -> float | None:
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


def error_text(exc: Exception) -> str:
    """The server's own message of an `openai` error, on one line and at most 500 characters."""
    body = getattr(exc, "body", None)
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            message = str(inner["message"])
        elif isinstance(inner, str):
            message = inner
    return " ".join(str(message).split())[:500]


class ChatClient:
    """Chat calls to one OpenAI-compatible endpoint, with the model adaptations learnt so far; thread-safe.

    `client` replaces the `openai.OpenAI` client (tests); `sleep` replaces `time.sleep` for backoff.
    """

    def __init__(
        self,
        config: LLMConfig,
        budget: Budget,
        transcript: Transcript,
        *,
        api_key: str,
        base_url: str,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.budget = budget
        self.transcript = transcript
        self.api_key = api_key
        self.base_url = base_url
        self._sleep = sleep
        self._client = client
        self._client_lock = threading.Lock()
        self._adapt_lock = threading.Lock()
        # per model: which token-limit parameter it takes, and whether it refuses `temperature`
        self._token_param: dict[str, str] = {}
        self._no_temperature: set[str] = set()

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

    def call(
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
            except CallFault as fault:
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
        """One chat-completions call: (text, usage, finish_reason), or a classified `CallFault`."""
        import openai

        where = self.base_url or "the OpenAI API"
        try:
            response = self._get_client().chat.completions.create(model=model, messages=messages, **params)
        except openai.APITimeoutError:
            raise CallFault(f"timed out after {self.config.timeout_s:g}s waiting for {where}", True) from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise CallFault(
                f"cannot reach {where} ({type(cause).__name__}: {' '.join(str(cause).split())[:200]}); check "
                f"proposer.llm.base_url or ${self.config.base_url_env}", True
            ) from None
        except openai.AuthenticationError as exc:
            raise CallFault(
                f"{where} rejected the API key (401: {error_text(exc)}); set ${self.config.api_key_env}", False
            ) from None
        except openai.NotFoundError as exc:
            raise CallFault(f"{where} does not serve model '{model}' (404: {error_text(exc)})", False) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            retriable = status in RETRIABLE_STATUS or status >= 500
            raise CallFault(f"HTTP {status} from {where}: {error_text(exc)}", retriable,
                             retry_after_s(getattr(exc.response, "headers", None))) from None
        except Exception as exc:  # unparseable body and the like
            raise CallFault(f"malformed reply from {where} ({type(exc).__name__}: {str(exc)[:200]})", True) from None
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
        fault: CallFault | None = None
        text: Any = None
        if not isinstance(choices, list) or not choices:
            fault = CallFault(f"malformed reply from {where}: no choices", True)
        else:
            message = getattr(choices[0], "message", None)
            text = getattr(message, "content", None) if message is not None else None
            if not isinstance(text, str) or not text.strip():
                finish = getattr(choices[0], "finish_reason", None)
                fault = CallFault(f"empty reply from {where} (finish_reason {finish})", True)
        if fault is not None:
            fault.usage = usage
            raise fault
        if not usage:  # some local servers omit usage: estimate, and say so
            usage = {"prompt_tokens": 0, "completion_tokens": math.ceil(len(text) / 4), "estimated": True}
        return text, usage, str(getattr(choices[0], "finish_reason", "") or "")
