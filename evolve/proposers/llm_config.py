"""Settings of the LLM proposer: the `[proposer.llm]` section, and the model ensemble with its prices.

`evolve.config` finds `LLMConfig` here to read and check that section; the proposer, the endpoint check
and the replay need nothing else from each other to share it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evolve.errors import UserError
from evolve.options import validate
from evolve.prompts import DEFAULT_MAX_CHARS


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
            raise UserError(f"proposer.llm.mix must weigh diff, rewrite and crossover (>= 0, not all 0), got "
                            f"{self.mix!r}")
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
