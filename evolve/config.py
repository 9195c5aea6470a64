"""Campaign configuration: dataclasses hold every default; TOML files and the command line only override.

A config has three sections, `[campaign]`, `[proposer]` (with `[proposer.llm]`, the LLM proposer's own
settings) and `[task]` (an import string for the task factory plus free options the factory validates).
Every field can be set from the command line with `--set section.key=value`. Unknown keys and bad values
raise `UserError` naming the key, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from evolve import options, plugins
from evolve.backends import BACKENDS
from evolve.errors import UserError
from evolve.loading import read_text_file

PROPOSER_KINDS = ("mutator", "llm", "replay")
SELECTION_STRATEGIES = ("rank", "uniform", "greedy")


_meta = options.meta  # field metadata: a help line plus optional checks (`min`, `max`, `choices`)


@dataclass
class CampaignConfig:
    """How long to search, how wide, and where the results go."""

    seed: int = field(default=0, metadata=_meta("campaign seed; with a deterministic proposer the run is reproducible"))
    max_evaluations: int = field(default=400, metadata=_meta("children to evaluate (the seed not counted)", min=1))
    max_minutes: float = field(default=3.0, metadata=_meta("wall-clock budget over all sessions; 0: none", min=0))
    max_cost: float = field(default=0.0, metadata=_meta("proposer dollars; 0: none", min=0))
    max_tokens: int = field(default=0, metadata=_meta("proposer tokens in + out; 0: none", min=0))
    workers: int = field(default=2, metadata=_meta("evaluations run at once", min=1))
    proposers: int = field(default=1, metadata=_meta("proposals made at once (raise for remote LLMs)", min=1))
    backend: str = field(default="local", metadata=_meta("evaluation backend: local, ray, or module:factory"))
    ray_address: str = field(
        default="",
        metadata=_meta("ray backend: cluster address (auto or HOST:PORT); empty: $RAY_ADDRESS, else a local instance")
    )
    islands: int = field(default=2, metadata=_meta("independent sub-populations", min=1))
    migration_interval: int = field(default=20, metadata=_meta("proposals between ring migrations; 0: never", min=0))
    migrants: int = field(default=1, metadata=_meta("elites each island sends to the next one", min=1))
    elite_size: int = field(default=8, metadata=_meta("programs kept per island as parents", min=1))
    selection: str = field(
        default="rank",
        metadata=_meta("parent draw: rank (weight 1/(rank+1)), uniform, greedy", choices=SELECTION_STRATEGIES)
    )
    map_elites: dict[str, float] = field(
        default_factory=dict, metadata=_meta("MAP-Elites instead of elite lists: {metric = bin width}, e.g. "
                                             "{balancedness_gpu = 0.01, speed_octaves = 1}; empty: elite lists")
    )
    children_penalty: float = field(
        default=0.5, metadata=_meta("parent weight is divided by 1 + penalty * children so far", min=0)
    )
    inspirations: int = field(default=2, metadata=_meta("other programs shown beside the parent", min=0))
    objectives: list[str] = field(
        default_factory=list, metadata=_meta("objective keys; empty: the task's primary; two or more: Pareto")
    )
    bucket_noisy: bool = field(
        default=True,
        metadata=_meta("round non-deterministic secondary objectives (runtime) to half-octaves before ranking")
    )
    novelty_threshold: float = field(
        default=1.0, metadata=_meta("reject a child whose normalised code similarity to an island program is >= this",
                                    min=0.5, max=1.0)
    )
    history_size: int = field(
        default=6,
        metadata=_meta("recent attempts on the island shown in each prompt (name, score change, error)", min=0)
    )
    notes_interval: int = field(
        default=25, metadata=_meta("proposals between model-written notes on what worked (proposers that write "
                                   "them, e.g. llm); 0: never", min=0)
    )
    cascade: bool = field(
        default=False, metadata=_meta("evaluate each child on the task's cheap first stage before the full evaluation "
                                      "(tasks that offer one; docs/search.md says when it pays)")
    )
    cascade_tolerance: float = field(
        default=0.02, metadata=_meta("first stage: stop a child scoring below its parent's first stage by more than "
                                     "this fraction of the parent's value", min=0)
    )
    novelty_structural: bool = field(
        default=True, metadata=_meta("reject a child whose syntax tree equals an island program's up to renamed "
                                     "identifiers, docstrings, comments and layout")
    )
    novelty_embeddings: str = field(
        default="", metadata=_meta("embedding model for novelty by meaning, served by proposer.llm's endpoint "
                                   "(/v1/embeddings, cached per run); empty: off")
    )
    novelty_embedding_threshold: float = field(
        default=0.995, metadata=_meta("reject a child whose embedding's cosine with an island elite's is >= this",
                                      min=0.0, max=1.0)
    )
    max_failed_proposals: int = field(
        default=25, metadata=_meta("stop after this many proposals in a row give nothing to evaluate", min=1)
    )
    seed_program: str = field(
        default="", metadata=_meta("the program the search starts from; empty: the task's own (Task.seed_program)")
    )
    out: str = field(default="", metadata=_meta("run directory; empty: results/<date-time>"))
    progress: bool = field(default=True, metadata=_meta("show a progress bar on stderr when it is a terminal"))


@dataclass
class ProposerConfig:
    """Who writes the patches. `kind` may also be an import string `module:factory` or `file.py:factory`,
    called as `factory(config, run_dir) -> Proposer`."""

    kind: str = field(default="mutator", metadata=_meta("mutator, llm, replay, or module:factory"))
    transcript: str = field(default="", metadata=_meta("replay: the transcript.jsonl to replay"))
    options: dict[str, Any] = field(default_factory=dict, metadata=_meta("free options for the mutator or a factory"))
    llm: Any = field(default=None,
                     metadata=_meta("the LLM proposer's settings (evolve.proposers.llm_config.LLMConfig)"))

    def __post_init__(self) -> None:
        if self.llm is None:
            cls = llm_config_class()
            self.llm = cls() if cls is not None else {}


@dataclass
class TaskConfig:
    """The problem: `factory(options) -> Task`, which validates its own options."""

    factory: str = field(
        default_factory=plugins.default_task_factory,
        metadata=_meta("import string of the task factory; default: the installed plugin's task (evolve.plugins)"),
    )
    options: dict[str, Any] = field(default_factory=dict, metadata=_meta("passed to the factory as a dict"))


@dataclass
class Config:
    campaign: CampaignConfig = field(default_factory=CampaignConfig)
    proposer: ProposerConfig = field(default_factory=ProposerConfig)
    task: TaskConfig = field(default_factory=TaskConfig)

    # ---- reading -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "Config":
        """Build a config from nested dicts (a parsed TOML file), checking every key and value."""
        config = cls()
        config.update(data, source)
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> "Config":
        path = Path(path)
        if not path.exists():
            raise UserError(f"config file {path} does not exist; check the --config path")
        try:
            data = tomllib.loads(read_text_file(path, "config file"))
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"config file {path} is not valid TOML: {exc}; fix that line") from None
        return cls.from_dict(data, source=str(path))

    def update(self, data: dict[str, Any], source: str = "config") -> None:
        """Merge nested dicts into this config; keys not given keep their value."""
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a table of sections, got {type(data).__name__}")
        for section, values in data.items():
            target = self._section(section, source)
            _merge(target, values, section, source)

    def set(self, dotted: str, value: Any, source: str = "command line") -> None:
        """Set one field by its dotted name, e.g. `campaign.workers` or `proposer.llm.models`."""
        parts = dotted.split(".")
        if len(parts) < 2:
            raise UserError(f"{source}: '{dotted}' is not section.key; e.g. campaign.workers=4")
        nested: Any = value
        for part in reversed(parts[1:]):
            nested = {part: nested}
        self.update({parts[0]: nested}, source)

    def _section(self, name: str, source: str) -> Any:
        names = [f.name for f in dataclasses.fields(self)]
        if name not in names:
            raise UserError(f"{source}: unknown section [{name}]{options.did_you_mean(name, names)}; sections: "
                            f"{', '.join(names)}")
        return getattr(self, name)

    def check(self) -> None:
        """Checks that span fields; run once every override is in."""
        kind = self.proposer.kind
        if kind not in PROPOSER_KINDS and ":" not in kind:
            raise UserError(
                f"proposer.kind must be one of {', '.join(PROPOSER_KINDS)} or module:factory, got {kind!r}"
            )
        if kind == "replay" and not self.proposer.transcript:
            raise UserError("proposer.transcript is empty: give --transcript FILE (a transcript.jsonl of an earlier "
                            "run)")
        backend = self.campaign.backend
        if backend not in BACKENDS and ":" not in backend:
            raise UserError(
                f"campaign.backend must be one of {', '.join(BACKENDS)} or module:factory, got {backend!r}"
            )
        if self.campaign.ray_address and backend == "local":
            raise UserError("campaign.ray_address is set but campaign.backend is local: add --backend ray "
                            "(or clear the address with --ray-address '')")

    # ---- writing -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _drop_none(dataclasses.asdict(self))

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def llm_config(self) -> Any:
        """The `[proposer.llm]` section as an `LLMConfig` (raises if the LLM proposer is not installed)."""
        if dataclasses.is_dataclass(self.proposer.llm):
            return self.proposer.llm
        raise UserError("the LLM proposer (evolve.proposers.llm) is not available in this install; use --proposer "
                        "mutator")


# ---- the LLM section is owned by the LLM proposer ------------------------------------------------
def llm_config_class() -> type | None:
    """`evolve.proposers.llm_config.LLMConfig`, or None while that module is absent (the mutator needs none of it)."""
    try:
        module = importlib.import_module("evolve.proposers.llm_config")
    except ImportError:
        return None
    cls = getattr(module, "LLMConfig", None)
    return cls if dataclasses.is_dataclass(cls) else None


# ---- merging and checking ---------------------------------------------------------------------------
def _merge(target: Any, values: Any, where: str, source: str) -> None:
    """Set the fields of dataclass `target` from dict `values`, checking names, types and ranges."""
    if not isinstance(values, dict):
        raise UserError(f"{source}: [{where}] must be a table of keys, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(target)}
    try:
        hints = typing.get_type_hints(type(target))
    except Exception:  # a section owned by another module whose hints do not resolve: check names only
        hints = {}
    for key, value in values.items():
        name = f"{where}.{key}"
        if key not in fields:
            raise UserError(
                f"{source}: unknown key {name}{_elsewhere(key, where) or options.did_you_mean(key, list(fields))}; "
                f"known in [{where}]: {', '.join(fields)}"
            )
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            _merge(current, values=value, where=name, source=source)
            continue
        if key == "llm" and isinstance(current, dict):  # LLM proposer absent: keep the table as given
            if not isinstance(value, dict):
                raise UserError(f"{source}: {name} must be a table, got {value!r}")
            current.update(value)
            continue
        checked = options.check(value, hints.get(key, Any), fields[key].metadata, name, source)
        if isinstance(current, dict) and isinstance(checked, dict):
            checked = {**current, **checked}  # tables merge, so a later layer adds keys without dropping others
        setattr(target, key, checked)


def _elsewhere(key: str, where: str) -> str:
    """A hint for a key written in the wrong section: the section that has it, or [task.options] for a
    key no section has and no known key resembles (a typo gets "did you mean" instead)."""
    homes = [f"[{path.rsplit('.', 1)[0]}]" for path, _, _ in field_help() if path.rsplit(".", 1)[-1] == key
             and path.rsplit(".", 1)[0] != where]
    if homes:
        return f"; '{key}' belongs in {' or '.join(homes)}"
    known = [path.rsplit(".", 1)[-1] for path, _, _ in field_help() if path.rsplit(".", 1)[0] == where]
    if where != "task.options" and not difflib.get_close_matches(key, known, n=1):
        return (f"; if '{key}' is a task option (dataset, split, scorer, ...), put it under [task.options] "
                f"(or --set task.options.{key}=...), as `run --print-config` lists")
    return ""


def _drop_none(data: Any) -> Any:
    """TOML has no null: leave out None values when writing."""
    if isinstance(data, dict):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_drop_none(v) for v in data if v is not None]
    return data


def parse_value(text: str) -> Any:
    """A command-line value as TOML (`4`, `0.5`, `true`, `["a", "b"]`), else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def field_help() -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every field, nested sections included: the reference a user sees
    with `--print-config`."""
    rows: list[tuple[str, Any, str]] = []

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                rows.append((f"{prefix}{f.name}", value, f.metadata.get("help", "")))

    walk(Config(), "")
    return rows
