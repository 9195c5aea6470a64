"""Build the proposer a config names. Each kind is imported only when chosen, so a campaign with the
offline mutator needs no HTTP client, and a broken or missing proposer module fails with one line."""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from evolve.config import Config
from evolve.errors import UserError
from evolve.loading import load_object
from evolve.proposers.base import Proposer
from evolve.task import Task

TRANSCRIPT = "transcript.jsonl"


def make_proposer(config: Config, run_dir: Path, task: Task | None = None) -> Proposer:
    """mutator | llm | replay, or an import string `module:factory` called as `factory(config, run_dir)`.

    The mutator's catalogue of block implementations is problem knowledge, so it comes from the task
    (`Task.mutation_catalogue()`, None when the task declares none), never from this package."""
    kind = config.proposer.kind
    if kind == "mutator":
        cls = _load("evolve.proposers.mutator", "OfflineMutator")
        catalogue = task.mutation_catalogue() if task is not None else None
        options = {"seed": config.campaign.seed, **config.proposer.options}
        if catalogue is not None:
            options["catalogue"] = catalogue
        return _construct(cls, options, "proposer.options")
    if kind == "llm":
        cls = _load("evolve.proposers.llm", "LLMProposer")
        llm = config.llm_config()
        return cls(llm, transcript=getattr(llm, "transcript", "") or run_dir / TRANSCRIPT)
    if kind == "replay":
        path = Path(config.proposer.transcript)
        if not path.is_file():
            raise UserError(f"proposer.transcript {path} does not exist; give --transcript a transcript.jsonl of a run")
        cls = _load("evolve.proposers.replay", "ReplayProposer")
        return cls(path)
    factory = load_object(kind, what="proposer.kind")
    return factory(config, run_dir)


def _load(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"proposer {module}.{name} is not available ({exc}); use another --proposer") from None


def _construct(cls: Any, options: dict[str, Any], where: str) -> Any:
    """Call `cls` with the options its signature accepts; an option it does not know is an error."""
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return cls(**options)
    unknown = [k for k in options if k not in params and k != "seed"]
    if unknown:
        raise UserError(f"unknown option {where}.{unknown[0]} for {cls.__name__}; known: {', '.join(params)}")
    return cls(**{k: v for k, v in options.items() if k in params})
