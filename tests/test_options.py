"""One validator for every set of options (evolve.options): configs, a task's options, LLM ensemble entries."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from evolve.config import Config
from evolve.errors import UserError
from evolve.options import describe, meta, validate


@dataclass(frozen=True)
class Knobs:
    mode: str = field(default="fast", metadata=meta("how to run", choices=("fast", "slow")))
    steps: int = field(default=10, metadata=meta("how many steps", min=1))
    rate: float = field(default=0.5, metadata=meta("a fraction", min=0, max=1))
    verbose: bool = field(default=False, metadata=meta("say more"))


def knob(key: str) -> str:
    return f"knob '{key}'"


def error(data: dict) -> str:
    with pytest.raises(UserError) as caught:
        validate(Knobs, data, name=knob, source="test.toml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_values_are_coerced_and_defaults_kept():
    knobs = validate(Knobs, {"rate": 1, "steps": 3}, name=knob)
    assert knobs == Knobs(rate=1.0, steps=3) and isinstance(knobs.rate, float)


def test_each_broken_rule_is_one_line_naming_the_option():
    assert error({"stesp": 3}) == ("test.toml: unknown knob 'stesp' (did you mean 'steps'?); "
                                   "known: mode, steps, rate, verbose")
    assert error({"steps": 2.5}) == "test.toml: knob 'steps' must be an integer, got 2.5"
    assert error({"steps": 0}) == "test.toml: knob 'steps' must be >= 1, got 0"
    assert error({"rate": 1.5}) == "test.toml: knob 'rate' must be <= 1, got 1.5"
    assert error({"mode": "medium"}) == "test.toml: knob 'mode' must be one of fast, slow, got 'medium'"
    assert error({"verbose": "yes"}) == "test.toml: knob 'verbose' must be true or false, got 'yes'"


def test_describe_lists_every_option_with_default_and_help():
    assert describe(Knobs)[0] == ("mode", "fast", "how to run")
    assert [row[0] for row in describe(Knobs)] == ["mode", "steps", "rate", "verbose"]


def test_configs_use_the_same_checks():
    with pytest.raises(UserError, match=r"^cli: campaign.workers must be >= 1, got 0$"):
        Config().set("campaign.workers", 0, source="cli")
    with pytest.raises(UserError, match=r"^cli: campaign.selection must be one of rank, uniform, greedy, got 'best'$"):
        Config().set("campaign.selection", "best", source="cli")


def test_eplb_task_options_use_the_same_checks():
    pytest.importorskip("torch")
    from evaluator.task import EvalOptions

    with pytest.raises(UserError, match=r"unknown task option 'windw' \(did you mean 'window'\?\)"):
        EvalOptions.from_dict({"windw": 50})
    with pytest.raises(UserError, match=r"task option 'protocol' must be one of predictive, in-sample, got 'next'"):
        EvalOptions.from_dict({"protocol": "next"})
    assert EvalOptions.from_dict({"timeout_s": 5}).timeout_s == 5.0


def test_llm_ensemble_entries_use_the_same_checks():
    from evolve.proposers.llm_config import LLMConfig

    with pytest.raises(UserError, match=r"unknown proposer.llm.models\[0\].prices_in \(did you mean 'price_in'\?\)"):
        LLMConfig(models=[{"name": "m", "prices_in": 1.0}]).model_specs()
    with pytest.raises(UserError, match=r"proposer.llm.models\[1\].weight must be a number, got 'heavy'"):
        LLMConfig(models=[{"name": "m"}, {"name": "n", "weight": "heavy"}]).model_specs()
    spec = LLMConfig(models=[{"name": "m", "weight": 2, "price_in": 1}]).model_specs()[0]
    assert (spec.name, spec.weight, spec.price_in, spec.price_out) == ("m", 2.0, 1.0, 0.0)
