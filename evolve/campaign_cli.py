"""`eplb-evolve run | runs | show`: start or resume a campaign, list runs, print a program's lineage.

A run directory holds `archive.sqlite` (everything), `config.toml` (the settings it ran with),
`transcript.jsonl` (LLM and replay proposers) and `best/` (each improvement of the best program).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from evolve.archive import Archive, Event
from evolve.backends import BackendContext, make_backend
from evolve.config import Config, field_help, parse_value
from evolve.loading import load_object, read_text_file
from evolve.errors import UserError
from evolve.loop import Campaign, ProgressBar, Summary, resolve_objectives
from evolve import resume
from evolve.paths import REPO_ROOT
from evolve.scrub import scrub_data
from evolve.task import Task

RESULTS = Path("results")
ARCHIVE = "archive.sqlite"


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser("run", help="run or resume an evolutionary search campaign",
                                description="Defaults come from the config dataclasses (see --print-config).")
    run.add_argument("--config", metavar="FILE", help="a TOML config ([campaign], [proposer], [task])")
    run.add_argument("--proposer", metavar="KIND", help="mutator | llm | replay | module:factory")
    run.add_argument("--model", metavar="NAME", help="LLM model name (replaces proposer.llm.models)")
    run.add_argument("--base-url", metavar="URL", help="OpenAI-compatible endpoint ending in /v1")
    run.add_argument("--transcript", metavar="FILE", help="transcript.jsonl to replay (--proposer replay)")
    run.add_argument("--dataset", metavar="NAME", help="task option: dataset name or trace file")
    run.add_argument("--scorer", metavar="NAME", help="task option: scorer")
    run.add_argument("--max-evaluations", type=int, metavar="N")
    run.add_argument("--max-minutes", type=float, metavar="M")
    run.add_argument("--max-cost", type=float, metavar="DOLLARS")
    run.add_argument("--workers", type=int, metavar="W", help="evaluations at once")
    run.add_argument("--backend", metavar="NAME", help="local | ray | module:factory")
    run.add_argument("--ray-address", metavar="ADDR", help="ray backend: auto | HOST:PORT (default: a local instance)")
    run.add_argument("--seed", type=int, metavar="S")
    run.add_argument("--out", metavar="DIR", help="run directory (default: results/<date-time>)")
    run.add_argument("--resume", metavar="DIR", help="continue the run in DIR where it stopped")
    run.add_argument("--allow-config-change", action="append", default=[], metavar="KEY",
                     help="on --resume: accept a change to KEY that alters scores or the lineage; recorded (repeatable)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="set any config field, e.g. --set campaign.islands=4 (repeatable)")
    run.add_argument("--print-config", action="store_true", help="print the effective config as TOML and exit")
    run.set_defaults(func=cmd_run)

    runs = subparsers.add_parser("runs", help="list campaign runs")
    runs.add_argument("--root", default=str(RESULTS), help="where runs live (default: results)")
    runs.set_defaults(func=cmd_runs)

    show = subparsers.add_parser("show", help="show a run's best versions or a program's lineage")
    show.add_argument("run", metavar="RUN", help="run directory, or its name under results/")
    which = show.add_mutually_exclusive_group()
    which.add_argument("--best", action="store_true", help="lineage of the best program")
    which.add_argument("--lineage", metavar="PROGRAM", help="lineage of a program (id or unique prefix)")
    show.set_defaults(func=cmd_show)


# ---- configuration from the command line -----------------------------------------------------------------
def _flag_settings(args: argparse.Namespace, config: Config) -> list[tuple[str, Any]]:
    """The named flags as (dotted key, value) pairs, in the order they apply."""
    pairs = [(f"campaign.{key}", getattr(args, key)) for key in
             ("max_evaluations", "max_minutes", "max_cost", "workers", "backend", "ray_address", "seed", "out")]
    pairs += [("proposer.kind", args.proposer), ("proposer.transcript", args.transcript),
              ("task.options.dataset", args.dataset), ("task.options.scorer", args.scorer),
              ("proposer.llm.base_url", args.base_url)]
    if args.model:
        old = [m for m in getattr(config.proposer.llm, "models", []) if isinstance(m, dict) and m.get("name") == args.model]
        pairs.append(("proposer.llm.models", old[:1] or [{"name": args.model}]))
    return [(key, value) for key, value in pairs if value is not None]


def build_config(args: argparse.Namespace) -> tuple[Config, Path, bool]:
    """(config, run directory, resuming?) from the flags, a config file and, on resume, the run's own config."""
    if args.resume:
        run_dir = Path(args.resume)
        if args.config:
            raise UserError("--resume uses the run's own config.toml; drop --config (budget flags may be given)")
        if not (run_dir / ARCHIVE).is_file():
            raise UserError(f"{run_dir} holds no {ARCHIVE}; give --resume a run directory made by `eplb-evolve run`")
        saved = run_dir / "config.toml"
        config = Config.from_file(saved) if saved.is_file() else _archived_config(run_dir)
    else:
        config = Config.from_file(args.config) if args.config else Config()
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item}: write KEY=VALUE, e.g. --set campaign.islands=4")
        config.set(key.strip(), parse_value(value.strip()), source=f"--set {key.strip()}")
    for key, value in _flag_settings(args, config):
        config.set(key, value, source=f"--{key.rsplit('.', 1)[-1].replace('_', '-')}")
    config.check()
    allow = getattr(args, "allow_config_change", None) or []
    if args.resume:
        config.campaign.out = str(run_dir)  # what else changed is checked against the run's record on start
        return config, run_dir, True
    if allow:
        raise UserError("--allow-config-change only applies to --resume; drop it for a new run")
    run_dir = Path(config.campaign.out) if config.campaign.out else _new_run_dir()
    if (run_dir / ARCHIVE).exists():
        raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
    config.campaign.out = str(run_dir)
    return config, run_dir, False


def _archived_config(run_dir: Path) -> Config:
    """The config stored in the archive, for a run whose config.toml was lost."""
    archive = Archive(run_dir / ARCHIVE)
    try:
        data = archive.meta("config")
    finally:
        archive.close()
    if data is None:
        raise UserError(f"{run_dir} has neither config.toml nor a stored config; start a new run with --out")
    return Config.from_dict(data, source=f"{run_dir / ARCHIVE}")


def _new_run_dir() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = RESULTS / stamp, 1
    while path.exists():
        n += 1
        path = RESULTS / f"{stamp}-{n}"
    return path


# ---- run ------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    config, run_dir, resuming = build_config(args)
    if args.print_config:
        for key, default, help in field_help():
            print(f"# {key} (default {default!r}): {help}")
        print(config.to_toml(), end="")
        return 0
    try:
        summary = run_campaign(config, run_dir, resuming, allow_changes=getattr(args, "allow_config_change", None) or [])
    except KeyboardInterrupt:
        print(f"interrupted; finished work is saved; continue with: eplb-evolve run --resume {run_dir}", file=sys.stderr)
        return 130
    for line in summary_lines(summary):
        print(line)
    return 0


def run_campaign(config: Config, run_dir: Path, resuming: bool, holdout: bool = True,
                 allow_changes: Sequence[str] = ()) -> Summary:
    """Build task, proposer and backend, open (or create) the archive, and run the campaign.

    Everything that can fail on a user mistake is built before the archive exists, so a failed start
    leaves no half-made run behind."""
    from evolve.proposers.factory import make_proposer

    if not resuming:
        _read_seed(config.campaign.seed_program)
    task = make_task(config.task.factory, config.task.options)
    resolve_objectives(config.campaign.objectives, task.objectives())
    changes = _resume_changes(run_dir, config, task, allow_changes) if resuming else []
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_locked(run_dir))
        proposer = make_proposer(config, run_dir, task)
        stack.callback(getattr(proposer, "close", lambda: None))
        backend = make_backend(config.campaign.backend, BackendContext(
            task, config.campaign.workers, config.task.factory, dict(config.task.options), config.campaign.ray_address))
        stack.callback(backend.close)
        archive = Archive(run_dir / ARCHIVE)
        stack.callback(archive.close)
        seed_code = None if archive.steps() else _read_seed(config.campaign.seed_program)
        _stamp_run(archive, config, task, resuming)
        resume.record(archive, changes, allow_changes)
        (run_dir / "config.toml").write_text(config.to_toml())
        archive.export_versions(run_dir)  # files a crash may have left unwritten
        with contextlib.closing(ProgressBar(config.campaign.progress)) as bar:
            summary = Campaign(config, task, proposer, backend, archive, run_dir, bar).run(seed_code)
        if holdout:
            summary.holdout = holdout_report(config, task, archive, summary)
        return summary


def make_task(factory: str, options: dict[str, Any]) -> Task:
    task = load_object(factory, what="task.factory")(dict(options))
    if not isinstance(task, Task):
        raise UserError(f"task.factory {factory} returned {type(task).__name__}, which is not an evolve.task.Task")
    return task


def _read_seed(path_text: str) -> str:
    for path in (Path(path_text), REPO_ROOT / path_text):
        if path.is_file():
            return read_text_file(path, "campaign.seed_program")
    raise UserError(f"campaign.seed_program {path_text} does not exist; give a program with --set campaign.seed_program=PATH")


def _resume_changes(run_dir: Path, config: Config, task: Task, allow: Sequence[str]) -> list[resume.Change]:
    """What differs from the run's own record (its config and its task's stamp); refuses any change not
    allowed by --allow-config-change, in one line naming each key."""
    archive = Archive(run_dir / ARCHIVE)
    try:
        stored_config, stored_stamp = archive.meta("config"), archive.meta("task_stamp")
    finally:
        archive.close()
    stamp = task.stamp()
    older = resume.stamp_is_older(stored_stamp, stamp)
    changes = resume.config_changes(stored_config, scrub_data(config.to_dict()), older) if stored_config else []
    changes += resume.stamp_changes(stored_stamp, stamp)
    resume.check_allow_keys(allow, [*resume.flatten(config.to_dict()), *resume.flatten(stamp, "task")])
    return resume.refuse_unless_allowed(changes, allow, run_dir)


def _stamp_run(archive: Archive, config: Config, task: Task, resuming: bool) -> None:
    """Record what the run is (on resume, the changes were checked by `_resume_changes`)."""
    stamp = task.stamp()
    if resuming:
        archive.set_meta(config=config.to_dict(), task_stamp=_plain(stamp))
        archive.add_event(Event("run_started", detail={"resume": True}))
        return
    archive.set_meta(config=config.to_dict(), seed=config.campaign.seed, task=task.name, task_stamp=_plain(stamp),
                     created_at=time.time(), rng="random.Random(sha256(f'{seed}/{index}/{purpose}')[:8])")
    archive.add_event(Event("run_started", detail={"resume": False}))


def _plain(value: Any) -> Any:
    """JSON-shaped copy, so stamps read back from the archive compare equal to fresh ones."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """One process per run directory; the lock dies with the process, so a kill -9 never leaves it stale."""
    with open(run_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{run_dir} is in use by another eplb-evolve process; wait for it or stop it") from None
        yield


def holdout_report(config: Config, task: Task, archive: Archive, summary: Summary) -> str:
    """Best vs seed on the task's holdout split, when the task has one."""
    if not summary.best_id or not summary.seed_id:
        return ""
    try:
        if hasattr(task, "with_options"):
            other = task.with_options(split="holdout")  # type: ignore[attr-defined]
        else:
            other = make_task(config.task.factory, {**config.task.options, "split": "holdout"})
    except (UserError, TypeError, ValueError) as exc:
        return f"holdout: skipped ({str(exc).splitlines()[0] if str(exc) else 'the task has no holdout split'})"
    mine, theirs = task.stamp(), other.stamp()
    if _plain(mine.get("dataset", {}).get("sha256") or mine) == _plain(theirs.get("dataset", {}).get("sha256") or theirs):
        return "holdout: skipped (the holdout split holds the same data as the search split)"
    objective = resolve_objectives(config.campaign.objectives, other.objectives())[0]
    values = {}
    for label, pid in (("best", summary.best_id), ("seed", summary.seed_id)):
        result = other.evaluate(archive.program(pid).code)
        values[label] = objective.value(result) if result.correct else None
    archive.add_event(Event("holdout", summary.best_id, {"objective": objective.key, **values}))
    best, seed = values["best"], values["seed"]
    if best is None or seed is None:
        return f"holdout: best {best} vs seed {seed} ({objective.key}; None = incorrect on the holdout split)"
    return f"holdout: best {best:.6g} vs seed {seed:.6g} ({objective.key}, change {best - seed:+.6g})"


def summary_lines(s: Summary) -> list[str]:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.6g}"

    lines = [
        f"run stopped: {s.reason}",
        f"  evaluations {s.evaluations} ({s.valid / max(1, s.evaluations):.0%} valid), cost ${s.cost:.2f}, "
        f"tokens {s.tokens}, {s.elapsed_s / 60:.1f} min",
        f"  best {s.best_id[:12]} score {fmt(s.best_score)} (seed {fmt(s.seed_score)})",
    ]
    if s.holdout:
        lines.append(f"  {s.holdout}")
    if s.best_file:
        lines.append(f"  best program: {s.best_file}")
    lines += [f"  archive: {s.run_dir / ARCHIVE}",
              f"  lineage: eplb-evolve show {s.run_dir} --best; continue: eplb-evolve run --resume {s.run_dir}",
              f"  browse it: eplb-evolve ui {s.run_dir} --open"]
    return lines


# ---- runs and show ----------------------------------------------------------------------------------
def cmd_runs(args: argparse.Namespace) -> int:
    root = Path(args.root)
    runs = sorted(p.parent for p in root.glob(f"*/{ARCHIVE}")) if root.is_dir() else []
    if not runs:
        print(f"no runs under {root}/; start one with `eplb-evolve run`")
        return 0
    print(f"{'run':<28} {'steps':>6} {'evals':>6} {'best':>10} {'proposer':<10} status")
    for run_dir in runs:
        archive = Archive(run_dir / ARCHIVE)
        try:
            q = archive.conn.execute
            steps = q("SELECT COUNT(*) FROM steps").fetchone()[0]
            evals = q("SELECT COUNT(*) FROM steps WHERE kind = 'evaluated'").fetchone()[0]
            best = q("SELECT MAX(score) FROM versions").fetchone()[0]
            finished = archive.events("run_finished")
            proposer = (archive.meta("config") or {}).get("proposer", {}).get("kind", "?").rsplit(":", 1)[-1]
            status = _status(run_dir, finished[-1]["detail"].get("reason", "") if finished else "incomplete")
        finally:
            archive.close()
        best_text = "-" if best is None else f"{best:.5g}"
        print(f"{run_dir.name:<28} {steps:>6} {evals:>6} {best_text:>10} {proposer[:10]:<10} {status}")
    return 0


def _status(run_dir: Path, last: str) -> str:
    """'running' while a process holds the run's lock, else how the last session ended."""
    try:
        with open(run_dir / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "running"
    except OSError:
        pass
    return last


def cmd_show(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    if not (run_dir / ARCHIVE).is_file() and (RESULTS / args.run / ARCHIVE).is_file():
        run_dir = RESULTS / args.run
    if not (run_dir / ARCHIVE).is_file():
        raise UserError(f"no run at {args.run}; list runs with `eplb-evolve runs`")
    archive = Archive(run_dir / ARCHIVE)
    try:
        versions = archive.versions()
        if args.lineage or args.best:
            if not versions and args.best:
                raise UserError(f"{run_dir} has no best program yet (the seed was never applied)")
            pid = archive.resolve(args.lineage) if args.lineage else versions[-1]["program_id"]
            print("\n".join(lineage_lines(archive, pid)))
            return 0
        print(f"run {run_dir}: {len(archive.steps())} steps, {len(versions)} best versions")
        for line in resume.recorded_lines(archive):
            print(line)
        for v in versions:
            print(f"  v{v['version']:03d} {v['program_id'][:12]} score {v['score']:.6g} step {v['idx']:>5}  {v['path']}")
        if versions:
            print(f"lineage of the best: eplb-evolve show {run_dir} --best")
        return 0
    finally:
        archive.close()


def lineage_lines(archive: Archive, pid: str) -> list[str]:
    """One line per generation: program, score, change from its parent, and the patch that made it."""
    lines = [f"{'gen':>4} {'program':<12} {'score':>10} {'change':>10}  patch"]
    previous = None
    for record, result in archive.lineage(pid):
        score = result.score if result is not None and result.correct else None
        change = "" if score is None or previous is None else f"{score - previous:+.4g}"
        name = record.patch_name or "seed"
        description = record.patch_description.strip().splitlines()[0][:70] if record.patch_description.strip() else ""
        score_text = "incorrect" if score is None else f"{score:.6g}"
        lines.append(f"{record.generation:>4} {record.id[:12]:<12} {score_text:>10} {change:>10}  {name}"
                     + (f": {description}" if description else ""))
        previous = score if score is not None else previous
    return lines
