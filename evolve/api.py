"""The Python API for notebooks and scripts: run or resume a campaign, and read an archive as DataFrames.

Everything here goes through the same code as `eplb-evolve run` and `eplb-evolve show`, so a campaign
started from Python is the same campaign, with the same checks and the same archive. It knows nothing
about any particular problem: the task is whatever `task.factory` in the config names.

    from evolve import run_campaign, resume_campaign, open_archive
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from evolve import campaign_cli
from evolve.archive import Archive
from evolve.config import Config
from evolve.errors import UserError
from evolve.loop import Summary

if TYPE_CHECKING:  # pandas is imported when an archive is opened, so `import evolve` stays light
    import pandas as pd

ConfigLike = Config | Mapping[str, Any] | str | Path | None


def load_config(config: ConfigLike = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """A checked `Config` from a Config, a nested dict (TOML-shaped), a TOML file path, or None (defaults).

    `overrides` maps dotted keys to values, as `--set` does: {"campaign.max_evaluations": 50}."""
    if isinstance(config, Config):
        result = Config.from_dict(config.to_dict(), source="config")  # a copy: the caller's object stays as it was
    elif isinstance(config, (str, Path)):
        result = Config.from_file(config)
    elif config is None:
        result = Config()
    elif isinstance(config, Mapping):
        result = Config.from_dict(dict(config), source="config")
    else:
        raise UserError(f"config must be a Config, a dict, a TOML file path or None, got {type(config).__name__}")
    for key, value in (overrides or {}).items():
        result.set(key, value, source=f"overrides[{key!r}]")
    result.check()
    return result


def run_campaign(config: ConfigLike = None, overrides: Mapping[str, Any] | None = None,
                 out: str | Path | None = None, holdout: bool = True) -> Summary:
    """Run a new campaign and return its `Summary` (best and seed ids and scores, run directory, ...).

    `out` is the run directory (default: `campaign.out`, else results/<date-time>); it must not hold a
    run already. With `holdout`, the best program and the seed are scored on the task's holdout split
    at the end, as `eplb-evolve run` does (`Summary.holdout`)."""
    cfg = load_config(config, overrides)
    if out is not None:
        cfg.campaign.out = str(out)
    run_dir = Path(cfg.campaign.out) if cfg.campaign.out else campaign_cli._new_run_dir()
    if (run_dir / campaign_cli.ARCHIVE).exists():
        raise UserError(f"{run_dir} already holds a run; continue it with resume_campaign({str(run_dir)!r}) "
                        "or choose another out")
    cfg.campaign.out = str(run_dir)
    return campaign_cli.run_campaign(cfg, run_dir, resuming=False, holdout=holdout)


def resume_campaign(run_dir: str | Path, overrides: Mapping[str, Any] | None = None,
                    holdout: bool = True, allow_config_changes: Sequence[str] = ()) -> Summary:
    """Continue a run where it stopped, with its own config. `overrides` may raise budgets and change
    resources freely (for example {"campaign.max_evaluations": 800}); a change that alters scores or the
    lineage is refused unless its key (or a prefix of it) is in `allow_config_changes`, as with
    `--allow-config-change` (see evolve.resume)."""
    sets = [f"{key}={_toml_value(value)}" for key, value in (overrides or {}).items()]
    parser = argparse.ArgumentParser(prog="resume_campaign")
    campaign_cli.register(parser.add_subparsers())
    args = parser.parse_args(["run", "--resume", str(run_dir), *(part for s in sets for part in ("--set", s))])
    config, path, _ = campaign_cli.build_config(args)
    return campaign_cli.run_campaign(config, path, resuming=True, holdout=holdout,
                                     allow_changes=tuple(allow_config_changes))


def _toml_value(value: Any) -> str:
    """A value as `--set` parses it back (TOML scalars; strings quoted)."""
    return json.dumps(value) if isinstance(value, (bool, int, float, str)) else str(value)


# ---- reading an archive ------------------------------------------------------------------------------
@dataclass
class ArchiveFrames:
    """A run's archive as pandas DataFrames, read once; nothing stays open.

    programs: one row per program: lineage columns, cost, `correct`, `error`, `score` (the task's scorer),
              one column per metric, and one `score_<name>` column per named scorer.
    lineage:  one row per program with a parent: `program_id`, `parent_id`, the patch, both scores and the
              change, so `lineage[lineage.change > 0]` lists the improving patches.
    steps, versions, events: the tables of the same names (see docs/campaigns.md).
    """

    path: Path
    programs: "pd.DataFrame"
    lineage: "pd.DataFrame"
    steps: "pd.DataFrame"
    versions: "pd.DataFrame"
    events: "pd.DataFrame"
    meta: dict[str, Any] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict, repr=False)

    def resolve(self, program: str) -> str:
        """A full program id from a unique prefix."""
        found = [pid for pid in self.codes if pid.startswith(program)]
        if len(found) != 1:
            raise UserError(f"{'no' if not found else 'more than one'} program with id starting '{program}' "
                            f"in {self.path}; give more of the id")
        return found[0]

    def code(self, program: str) -> str:
        """A program's code by id or unique id prefix."""
        return self.codes[self.resolve(program)]

    def chain(self, program: str) -> "pd.DataFrame":
        """The programs from the seed down to `program` (id or unique prefix), one row each, seed first."""
        by_id = self.programs.set_index("id", drop=False)
        order: list[str] = []
        pid = self.resolve(program)
        while pid and pid not in order and pid in by_id.index:
            order.append(pid)
            parent = by_id.at[pid, "parent_id"]
            pid = parent if isinstance(parent, str) else ""
        return by_id.loc[list(reversed(order))].reset_index(drop=True)


def find_archive(run: str | Path) -> Path:
    """archive.sqlite from a run directory, the file itself, or a run name under results/."""
    path = Path(run)
    for candidate in (path, path / campaign_cli.ARCHIVE, campaign_cli.RESULTS / path / campaign_cli.ARCHIVE):
        if candidate.is_file():
            return candidate
    raise UserError(f"no archive at {run}; give a run directory (list them with `eplb-evolve runs`)")


def open_archive(run: str | Path) -> ArchiveFrames:
    """Read a run's archive (a run directory, its archive.sqlite, or a run name under results/)."""
    import pandas as pd

    path = find_archive(run)
    archive = Archive(path)  # upgrades an older schema in place, as every reader of an archive does
    try:
        q = archive.conn
        rows = pd.read_sql(
            "SELECT p.id, p.parent_id, p.generation, p.island, p.patch_name, p.patch_description, p.proposer, "
            "p.model, p.tokens_in, p.tokens_out, p.cost, p.inspirations, p.created_at, r.correct, r.error, "
            "r.score, r.metrics, r.scores, r.evaluator_version, r.scorer, r.evaluated_at "
            "FROM programs p LEFT JOIN results r ON r.program_id = p.id ORDER BY p.created_at, p.id", q)
        codes = dict(q.execute("SELECT id, code FROM programs").fetchall())
        steps = pd.read_sql("SELECT * FROM steps ORDER BY idx", q)
        versions = pd.read_sql("SELECT * FROM versions ORDER BY version", q)
        events = pd.read_sql("SELECT * FROM events ORDER BY id", q)
        meta = {key: archive.meta(key) for key in ("config", "seed", "task", "task_stamp", "created_at", "elapsed_s")}
    finally:
        archive.close()
    programs = _programs_frame(rows)
    return ArchiveFrames(path, programs, _lineage_frame(programs), steps, versions, events, meta, codes)


def _programs_frame(rows: "pd.DataFrame") -> "pd.DataFrame":
    import pandas as pd

    rows = rows.copy()
    rows["correct"] = rows["correct"].fillna(0).astype(bool)
    rows["inspirations"] = rows["inspirations"].map(json.loads)
    metrics = pd.DataFrame([json.loads(m) if isinstance(m, str) else {} for m in rows.pop("metrics")], index=rows.index)
    scores = pd.DataFrame([json.loads(s) if isinstance(s, str) else {} for s in rows.pop("scores")], index=rows.index)
    metrics = metrics.drop(columns=[c for c in metrics.columns if c in rows.columns])
    scores = scores.add_prefix("score_")
    return pd.concat([rows, metrics, scores], axis=1)


def _lineage_frame(programs: "pd.DataFrame") -> "pd.DataFrame":
    children = programs[programs["parent_id"].notna()]
    scores = programs.set_index("id")["score"]
    lineage = children[["id", "parent_id", "generation", "island", "patch_name", "correct", "score"]].rename(
        columns={"id": "program_id"}).reset_index(drop=True)
    lineage["parent_score"] = lineage["parent_id"].map(scores)
    lineage["change"] = lineage["score"] - lineage["parent_score"]
    return lineage
