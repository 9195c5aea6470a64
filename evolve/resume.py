"""What `--resume` may change: budgets and resources freely; anything that alters scores or the lineage only
with an explicit, recorded override.

Two comparisons, both against what the run recorded:
- the config the run was made with (the archive's copy; `config.toml` may have been edited since) with
  the effective one, key by key. Budgets, workers, the backend and the LLM endpoint settings may change;
  any other campaign or proposer key would change the lineage (campaign seed, objectives, islands,
  selection, models...), and `task.factory` changes the problem.
- the task's stamp (`Task.stamp()`) then and now. The task declares in its stamp everything that makes
  two scores comparable (evaluator version, data and its checksum, scorer, and the options that alter
  scores), so `evolve/` needs no knowledge of the task's options: a task option left out of the stamp
  (a timeout, a thread count) may change on resume. A run whose stamp predates some of the keys the task
  stamps now has every task option compared as configured instead.

A refused change is one `UserError` line naming every key with both values. `--allow-config-change KEY`
(repeatable; a prefix such as `task.dataset` covers the keys under it) lets it through, and the run
records it (archive meta `config_changes` and a `config_change` event), which `eplb-evolve show` lists.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from evolve.archive import Archive, Event
from evolve.errors import UserError

# Keys a resumed run may change without an override: budgets, resources, where the endpoint is.
FREE_KEYS = frozenset({
    "campaign.max_evaluations", "campaign.max_minutes", "campaign.max_cost", "campaign.max_tokens",
    "campaign.max_failed_proposals", "campaign.workers", "campaign.proposers", "campaign.backend",
    "campaign.ray_address", "campaign.progress", "campaign.out",
    "campaign.seed_program",  # read only to start a run: a resumed run's seed is in its archive
    "proposer.llm.base_url", "proposer.llm.api_key_env", "proposer.llm.base_url_env", "proposer.llm.timeout_s",
    "proposer.llm.max_retries", "proposer.llm.max_cost", "proposer.llm.max_tokens_total",
    "proposer.llm.backoff_base_s", "proposer.llm.backoff_max_s",
})
META_KEY = "config_changes"


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any

    def describe(self) -> str:
        return f"{self.key} was {_show(self.old)}, now {_show(self.new)}"


def _show(value: Any) -> str:
    if value is None:
        return "(not set)"
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):  # an empty table is the same as an absent one
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def _plain(value: Any) -> Any:
    """JSON-shaped copy, so values read back from the archive compare equal to fresh ones."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def config_changes(stored: dict[str, Any], effective: dict[str, Any], task_options: bool = False) -> list[Change]:
    """Changed keys between two config dicts, except free ones and, unless `task_options`, the task's
    options (the task's stamp judges those)."""
    old, new = flatten(_plain(stored)), flatten(_plain(effective))
    changes = []
    for key in sorted(set(old) | set(new)):
        if key in FREE_KEYS or (key.startswith("task.options.") and not task_options):
            continue
        if old.get(key) != new.get(key):
            changes.append(Change(key, old.get(key), new.get(key)))
    return changes


def stamp_is_older(stored: dict[str, Any] | None, current: dict[str, Any]) -> bool:
    """True when the run's stamp lacks keys the task stamps now (written by an older version): its task
    options are then compared as configured, every one of them, since the stamp cannot say which matter."""
    return not stored or bool(set(flatten(_plain(current))) - set(flatten(_plain(stored))))


def stamp_changes(stored: dict[str, Any] | None, current: dict[str, Any]) -> list[Change]:
    """Changed keys of the task's stamp, named `task.<key>`. Keys only one side has (a stamp written by an
    older version) are not compared."""
    if not stored:
        return []
    old, new = flatten(_plain(stored), "task"), flatten(_plain(current), "task")
    return [Change(key, old[key], new[key]) for key in sorted(set(old) & set(new)) if old[key] != new[key]]


def _allowed(key: str, allow: Iterable[str]) -> bool:
    return any(key == a or key.startswith(a.rstrip(".") + ".") for a in allow)


def refuse_unless_allowed(changes: Sequence[Change], allow: Sequence[str], run_dir: Any) -> list[Change]:
    """Raise one line naming every change not allowed; return the allowed ones (to be recorded)."""
    refused = [c for c in changes if not _allowed(c.key, allow)]
    if refused:
        raise UserError(
            f"--resume {run_dir}: " + "; ".join(c.describe() for c in refused)
            + ". This alters scores or the lineage: start a new run with --out, or let it through with "
            + " ".join(f"--allow-config-change {c.key}" for c in refused) + " (recorded in the run)"
        )
    return list(changes)


def check_allow_keys(allow: Sequence[str], known: Iterable[str]) -> None:
    """An override naming no key of the config or stamp is a typo: say so rather than ignore it."""
    known = list(known)
    for key in allow:
        if not any(k == key or k.startswith(key.rstrip(".") + ".") for k in known):
            raise UserError(f"--allow-config-change {key}: no such config or task stamp key; "
                            "use the key the refusal named, e.g. task.options.window or campaign.seed")


def record(archive: Archive, changes: Sequence[Change], allow: Sequence[str]) -> None:
    """Keep the overridden changes in the run: meta `config_changes` (appended) and one event each."""
    if not changes:
        return
    now = time.time()
    entries = [{**asdict(c), "at": now, "allowed_by": next(a for a in allow if _allowed(c.key, [a]))}
               for c in changes]
    archive.set_meta(**{META_KEY: [*(archive.meta(META_KEY) or []), *_plain(entries)]})
    for entry in entries:
        archive.add_event(Event("config_change", detail=entry))


def recorded_lines(archive: Archive) -> list[str]:
    """What `show` prints about overridden changes: one line each, oldest first."""
    lines = []
    for entry in archive.meta(META_KEY) or []:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.get("at", 0)))
        lines.append(f"  config changed on resume {when}: "
                     f"{Change(entry['key'], entry['old'], entry['new']).describe()} "
                     f"(--allow-config-change {entry.get('allowed_by', entry['key'])})")
    return lines
