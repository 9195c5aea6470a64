"""`eplb-evolve run`: start or resume a campaign (`runs` and `show`, which look at runs, are in `runs_cli`).

A run directory holds `archive.sqlite` (everything), `config.toml` (the settings it ran with),
`run.log` (what the run printed, with times), `transcript.jsonl` (LLM and replay proposers) and `best/`
(each improvement of the best program). Relative paths resolve from the working directory: runs go to
`./results/`; the seed program (`campaign.seed_program`, else the task's own, `Task.seed_program`) is read
from there, falling back to the copy bundled with the install (and saying so) only when the working
directory has none.
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

from evolve import plugins, resume
from evolve.archive import Archive, Event
from evolve.backends import BackendContext, make_backend
from evolve.config import CampaignConfig, Config, field_help, parse_value
from evolve.errors import UserError
from evolve.loading import load_object, read_text_file
from evolve.loop import Campaign, ProgressBar, Summary, resolve_objectives
from evolve.paths import REPO_ROOT
from evolve.runlog import RunLog
from evolve.scrub import scrub_data
from evolve.task import Task, TaskFactory

# what a task must have; a missing one is named when a factory returns something else
_TASK_MEMBERS = ("name", "entry_function", "problem_statement", "objectives", "stamp", "evaluate",
                 "seed_program", "holdout", "mutation_catalogue")

RESULTS = Path("results")
ARCHIVE = "archive.sqlite"


def _default(key: str) -> str:
    """A campaign field's default as the help text shows it."""
    value = getattr(CampaignConfig(), key)
    return f"{value:g}" if isinstance(value, float) else str(value)


BUDGET_EPILOG = f"""budgets (the run stops at the first one reached; 0 means none):
  --max-evaluations  children evaluated, seed not counted (default {_default("max_evaluations")})
  --max-minutes      wall-clock minutes, counted over all sessions of a resumed run (default {_default("max_minutes")})
  --max-cost         proposer dollars; needs priced models (default {_default("max_cost")}: none)
  --max-tokens       proposer tokens in + out (default {_default("max_tokens")}: none)
The summary names the budget that stopped a run and the flag that extends it: `run --resume DIR
--max-minutes 10` continues a finished run. Every other setting: --print-config."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from evolve.cli import HelpFormatter

    class Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    run = subparsers.add_parser("run", help="run or resume an evolutionary search campaign",
                                description="Search from the seed program with a proposer, evaluating every child.\n"
                                            "Defaults come from the config dataclasses (see --print-config); a\n"
                                            "--config file overrides them (examples in configs/), and flags override "
                                            "the file.",
                                epilog=BUDGET_EPILOG, formatter_class=Formatter)
    run.add_argument("--config", metavar="FILE",
                     help="a TOML config ([campaign], [proposer], [task]); examples in configs/ (default: none)")
    run.add_argument("--proposer", metavar="KIND", help="mutator | llm | replay | module:factory (default: mutator)")
    run.add_argument("--model", metavar="NAME",
                     help="LLM model name; replaces proposer.llm.models (default: gpt-4o-mini, priced)")
    run.add_argument("--price-in", type=float, metavar="DOLLARS",
                     help="with --model: its price per million prompt tokens (default: unpriced unless the "
                          "config prices that model)")
    run.add_argument("--price-out", type=float, metavar="DOLLARS",
                     help="with --model: its price per million completion tokens (default: as --price-in)")
    run.add_argument("--base-url", metavar="URL",
                     help="OpenAI-compatible endpoint ending in /v1 (default: $OPENAI_BASE_URL, else OpenAI)")
    run.add_argument("--skip-endpoint-check", action="store_true",
                     help="do not send GET /models to the LLM endpoint before the campaign starts")
    run.add_argument("--transcript", metavar="FILE",
                     help="transcript.jsonl to replay with --proposer replay (default: none)")
    for flag in plugins.task_flags():  # the installed application's flags for its task's options
        run.add_argument(flag.flag, dest=_flag_dest(flag), metavar=flag.metavar, help=flag.help)
    run.add_argument("--max-evaluations", type=int, metavar="N",
                     help=f"budget: children to evaluate (default {_default('max_evaluations')})")
    run.add_argument("--max-minutes", type=float, metavar="M",
                     help=f"budget: wall-clock minutes over all sessions; 0: none (default {_default('max_minutes')})")
    run.add_argument("--max-cost", type=float, metavar="DOLLARS",
                     help=f"budget: proposer dollars, needs priced models; 0: none (default {_default('max_cost')})")
    run.add_argument("--max-tokens", type=int, metavar="N",
                     help=f"budget: proposer tokens in + out; 0: none (default {_default('max_tokens')})")
    run.add_argument("--workers", type=int, metavar="W", help=f"evaluations at once (default {_default('workers')})")
    run.add_argument("--backend", metavar="NAME", help=f"local | ray | module:factory (default {_default('backend')})")
    run.add_argument("--ray-address", metavar="ADDR", help="ray backend: auto | HOST:PORT (default: a local instance)")
    run.add_argument("--seed", type=int, metavar="S", help=f"campaign seed (default {_default('seed')})")
    run.add_argument("--out", metavar="DIR",
                     help="run directory (default: results/<date-time> in the working directory)")
    run.add_argument("--resume", metavar="DIR",
                     help="continue the run in DIR; give a larger budget to extend a finished run "
                                                     "(default: start a new run)")
    run.add_argument("--allow-config-change", action="append", default=[], metavar="KEY",
                     help="on --resume: accept a change to KEY that alters scores or the lineage; recorded "
                          "(repeatable; default: none)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="set any config field, e.g. --set campaign.islands=4 (repeatable; default: none)")
    run.add_argument("--print-config", action="store_true",
                     help="print every setting with its default and help, the task's options, then the effective "
                          "config as TOML, and exit")
    run.set_defaults(func=cmd_run)


# ---- configuration from the command line -----------------------------------------------------------------
def _flag_dest(flag: plugins.TaskFlag) -> str:
    """Where argparse keeps a task flag's value (apart from evolve's own flags)."""
    return f"task_option_{flag.option}"


def _flag_settings(args: argparse.Namespace, config: Config) -> list[tuple[str, Any]]:
    """The named flags as (dotted key, value) pairs, in the order they apply."""
    pairs = [(f"campaign.{key}", getattr(args, key, None)) for key in
             ("max_evaluations", "max_minutes", "max_cost", "max_tokens", "workers", "backend", "ray_address", "seed",
              "out")]
    pairs += [("proposer.kind", args.proposer), ("proposer.transcript", args.transcript)]
    pairs += [(f"task.options.{flag.option}", getattr(args, _flag_dest(flag), None)) for flag in plugins.task_flags()]
    pairs += [("proposer.llm.base_url", args.base_url)]
    price_in, price_out = getattr(args, "price_in", None), getattr(args, "price_out", None)
    if (price_in is not None or price_out is not None) and not args.model:
        raise UserError("--price-in/--price-out price the model given with --model; add --model NAME "
                        "(or set prices in [[proposer.llm.models]])")
    if args.model:
        old = [m for m in getattr(config.proposer.llm, "models", [])
               if isinstance(m, dict) and m.get("name") == args.model]
        entry = dict(old[0]) if old else {"name": args.model}
        if price_in is not None:
            entry["price_in"] = price_in
            entry["price_out"] = price_in if price_out is None else price_out
        elif price_out is not None:
            entry["price_out"] = price_out
        pairs.append(("proposer.llm.models", [entry]))
    return [(key, value) for key, value in pairs if value is not None]


def check_cost_cap(config: Config) -> None:
    """A dollar cap counts unpriced calls as free and would never stop the run: refuse it up front."""
    if config.campaign.max_cost <= 0 or config.proposer.kind != "llm":
        return
    specs = config.llm_config().model_specs()
    unpriced = [s.name for s in specs if s.weight > 0 and s.price_in == 0 and s.price_out == 0]
    if unpriced:
        raise UserError(f"--max-cost {config.campaign.max_cost:g} is set but model {', '.join(unpriced)} has no "
                        "price, so its calls would count as free and the cap would never stop the run; give "
                        "--price-in and --price-out ($ per million tokens), or cap tokens with --max-tokens instead")


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
    check_cost_cap(config)
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
        print("\n".join(config_reference(config)))
        print(config.to_toml(), end="")
        return 0
    try:
        summary = run_campaign(config, run_dir, resuming, check_endpoint=not args.skip_endpoint_check,
                               allow_changes=getattr(args, "allow_config_change", None) or [], need_budget=True)
    except KeyboardInterrupt:
        print(f"interrupted; finished work is saved; continue with: eplb-evolve run --resume {run_dir}",
              file=sys.stderr)
        return 130
    if summary.new_evaluations == 0:  # nothing to show for the run: say so in the exit status too
        return 1
    return 0


def config_reference(config: Config) -> list[str]:
    """Comment lines: every config field with its default and help, then the task's own options."""
    lines = [f"# {key} (default {default!r}): {help}" for key, default, help in field_help()]
    lines.append(f"# task options ([task.options] in a file, --set task.options.KEY=VALUE) of {config.task.factory}:")
    try:
        factory = load_object(config.task.factory, what="task.factory")
    except UserError as exc:
        return lines + [f"#   (cannot list them: {exc})"]
    if not isinstance(factory, TaskFactory):
        return lines + ["#   (the factory is a plain function and declares no options; see its documentation)"]
    return lines + [f"#   task.options.{o.name} (default {o.default!r}): {o.help}" for o in factory.options]


def run_campaign(config: Config, run_dir: Path, resuming: bool, holdout: bool = True,
                 check_endpoint: bool = False, log: RunLog | None = None,
                 allow_changes: Sequence[str] = (), need_budget: bool = False) -> Summary:
    """Build task, proposer and backend, open (or create) the archive, and run the campaign.

    `need_budget` (the command line's resume) refuses to resume a run whose budget is already spent,
    naming the flag that extends it, instead of only repairing its files.

    Everything that can fail on a user mistake (the seed, the task, an LLM endpoint) is checked before
    the archive exists, so a failed start leaves no half-made run behind. Start lines, progress and the
    summary go to `run.log` in the run directory (and to stdout: start and summary always, progress
    when stdout is not a terminal)."""
    from evolve.proposers.factory import make_proposer

    task = make_task(config.task.factory, config.task.options)
    if not config.campaign.seed_program:  # recorded in config.toml, so the run says which file it started from
        config.campaign.seed_program = task.seed_program()
    seed_path = None if resuming else _seed_path(config.campaign.seed_program)
    if seed_path is not None:
        read_text_file(seed_path, "campaign.seed_program")  # a seed that cannot be read fails before any file exists
    resolve_objectives(config.campaign.objectives, task.objectives())
    if check_endpoint and config.proposer.kind == "llm":
        from evolve.proposers.endpoint import check_endpoint as check

        check(config.llm_config())
    changes = _resume_changes(run_dir, config, task, allow_changes) if resuming else []
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_locked(run_dir))
        if resuming and need_budget:
            check_budget_left(config, run_dir)
        log = log or stack.enter_context(contextlib.closing(RunLog(run_dir)))
        try:
            summary = _run_logged(config, run_dir, resuming, holdout, task, seed_path, stack, log, make_proposer,
                                  (changes, allow_changes))
        except UserError as exc:
            log.line(f"error: {exc}", show=False)
            raise
        except KeyboardInterrupt:
            log.line("interrupted; finished work is saved", show=False)
            raise
        for line in summary_lines(summary, config.campaign):
            log.line(line, show=True)
        return summary


def _run_logged(config: Config, run_dir: Path, resuming: bool, holdout: bool, task: Task, seed_path: Path | None,
                stack: contextlib.ExitStack, log: RunLog, make_proposer: Any,
                resume_changes: tuple[list[resume.Change], Sequence[str]] = ([], ())) -> Summary:
    for line in start_lines(config, run_dir, resuming, task, seed_path):
        log.line(line, show=True)
    proposer = make_proposer(config, run_dir, task)
    stack.callback(getattr(proposer, "close", lambda: None))
    backend = make_backend(config.campaign.backend, BackendContext(
        task, config.campaign.workers, config.task.factory, dict(config.task.options), config.campaign.ray_address))
    stack.callback(backend.close)
    archive = Archive(run_dir / ARCHIVE)
    stack.callback(archive.close)
    seed_code = None if archive.steps() else read_text_file(_seed_path(config.campaign.seed_program),
                                                             "campaign.seed_program")
    _stamp_run(archive, config, task, resuming)
    resume.record(archive, *resume_changes)
    (run_dir / "config.toml").write_text(config.to_toml())
    archive.export_versions(run_dir)  # files a crash may have left unwritten
    with contextlib.closing(ProgressBar(config.campaign.progress, log=log.line)) as bar:
        summary = Campaign(config, task, proposer, backend, archive, run_dir, bar).run(seed_code)
    if holdout:
        summary.holdout = holdout_report(config, task, archive, summary)
    return summary


def start_lines(config: Config, run_dir: Path, resuming: bool, task: Task, seed_path: Path | None) -> list[str]:
    """What a run is about to do and where it reads and writes: printed before the first evaluation."""
    c = config.campaign
    lines = [f"{'resuming' if resuming else 'new'} run: {run_dir.resolve()} (log: {run_dir.resolve() / 'run.log'})"]
    if seed_path is not None:
        lines.append(f"seed program: {seed_path.resolve()}{_origin(seed_path)}")
    lines.append(f"task: {task.name}; {_describe(task.stamp())}")
    proposer = config.proposer.kind
    if proposer == "llm":
        llm = config.llm_config()
        models = ", ".join(str(m.get("name") if isinstance(m, dict) else m) for m in llm.models)
        proposer += f" ({models} at {llm.base_url or '$' + llm.base_url_env + ' or the OpenAI API'})"
    lines.append(f"proposer: {proposer}; backend: {c.backend} with {c.workers} worker(s)")
    lines.append(budget_line(c))
    return lines


def budget_line(c: CampaignConfig) -> str:
    def cap(value: float, text: str, flag: str) -> str:
        return f"{text} ({flag})" if value else f"none on {flag.removeprefix('--max-')} ({flag})"

    return "budgets: " + "; ".join([
        f"{c.max_evaluations} evaluations (--max-evaluations)",
        cap(c.max_minutes, f"{c.max_minutes:g} minutes over all sessions", "--max-minutes"),
        cap(c.max_cost, f"${c.max_cost:g}", "--max-cost"),
        cap(c.max_tokens, f"{c.max_tokens} tokens", "--max-tokens"),
    ])


def _describe(stamp: dict[str, Any]) -> str:
    """A task stamp as `key value` pairs, nested tables flattened and checksums shortened."""
    parts = []
    for key, value in stamp.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} {str(v)[:12] if k == 'sha256' else v}" for k, v in value.items())
            parts.append(f"{key} ({inner})")
        else:
            parts.append(f"{key} {value}")
    return "; ".join(parts)


def check_budget_left(config: Config, run_dir: Path) -> None:
    """A resumed run whose budget is spent would do nothing: say which budget, and the flag to extend it."""
    archive = Archive(run_dir / ARCHIVE)
    try:
        steps = archive.steps()
        elapsed_min = float(archive.meta("elapsed_s", 0.0) or 0.0) / 60
    finally:
        archive.close()
    if not steps:
        return
    c = config.campaign
    evaluations = sum(s.kind == "evaluated" for s in steps)
    cost, tokens = sum(s.cost for s in steps), sum(s.tokens for s in steps)
    spent = [
        (evaluations >= c.max_evaluations, f"evaluation budget ({evaluations} of {c.max_evaluations})",
         "max_evaluations"),
        (bool(c.max_minutes) and elapsed_min >= c.max_minutes,
         f"time budget ({elapsed_min:.1f} of {c.max_minutes:g} minutes, counted over all sessions)", "max_minutes"),
        (bool(c.max_cost) and cost >= c.max_cost, f"cost budget (${cost:.2f} of ${c.max_cost:g})", "max_cost"),
        (bool(c.max_tokens) and tokens >= c.max_tokens, f"token budget ({tokens} of {c.max_tokens})", "max_tokens"),
    ]
    for reached, what, key in spent:
        if reached:
            raise UserError(f"{run_dir} has already used its {what}; to continue, raise it: "
                            f"eplb-evolve run --resume {run_dir} {extend_flag(c, key, elapsed_min)}")


def extend_flag(c: CampaignConfig, key: str, elapsed_min: float = 0.0) -> str:
    """The flag and a value that extends budget `key` (about as much again as it allowed so far)."""
    flag = "--" + key.replace("_", "-")
    value = getattr(c, key)
    if key == "max_minutes":
        return f"{flag} {max(2 * value, elapsed_min + value):g}"
    if key == "max_cost":
        return f"{flag} {2 * value:g}"
    return f"{flag} {2 * value}"


def make_task(factory: str, options: dict[str, Any]) -> Task:
    if not factory:
        raise UserError("task.factory is empty and no installed plugin provides a default task; name one in the "
                        "config ([task] factory = \"module:make_task\" or \"file.py:make_task\")")
    task = load_object(factory, what="task.factory")(dict(options))
    if not isinstance(task, Task):
        missing = [name for name in _TASK_MEMBERS if not hasattr(task, name)]
        raise UserError(f"task.factory {factory} returned {type(task).__name__}, which is not an evolve.task.Task"
                        f"{' (it lacks ' + ', '.join(missing) + ')' if missing else ''}; subclass evolve.task.TaskBase "
                        "for the optional features' defaults")
    return task


def _seed_path(path_text: str) -> Path:
    """The seed program: relative to the working directory, else the copy bundled with the install."""
    if not path_text:
        raise UserError("campaign.seed_program is empty and the task names no seed program of its own; "
                        "give one with --set campaign.seed_program=PATH")
    for path in (Path(path_text), REPO_ROOT / path_text):
        if path.is_file():
            return path
    raise UserError(f"campaign.seed_program {path_text} does not exist; give a program with --set "
                    "campaign.seed_program=PATH")


def _origin(path: Path) -> str:
    """Where a file came from, when that is not the working directory."""
    try:
        path.resolve().relative_to(Path.cwd().resolve())
        return ""
    except ValueError:
        pass
    try:
        path.resolve().relative_to(REPO_ROOT)
        return " (bundled with the install: the working directory has none)"
    except ValueError:
        return ""


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
        other = task.holdout()
    except (UserError, TypeError, ValueError) as exc:
        return f"holdout: skipped ({str(exc).splitlines()[0] if str(exc) else 'the task has no holdout split'})"
    if other is None:
        return "holdout: skipped (the task declares no holdout data)"
    mine, theirs = task.stamp(), other.stamp()
    mine_data = mine.get("dataset", {}).get("sha256") or mine
    if _plain(mine_data) == _plain(theirs.get("dataset", {}).get("sha256") or theirs):
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


def summary_lines(s: Summary, config: CampaignConfig | None = None) -> list[str]:
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
    lines += [f"  archive: {s.run_dir / ARCHIVE}; log: {s.run_dir / 'run.log'}",
              f"  lineage: eplb-evolve show {s.run_dir} --best"]
    if s.limit and config is not None:
        lines.append(f"  stopped by campaign.{s.limit}; to continue: eplb-evolve run --resume {s.run_dir} "
                     f"{extend_flag(config, s.limit, s.elapsed_s / 60)}")
    elif s.new_evaluations == 0:
        lines.append("  no child was evaluated in this session; fix what the first line names, then: "
                     f"eplb-evolve run --resume {s.run_dir}")
    else:
        lines.append(f"  continue: eplb-evolve run --resume {s.run_dir}")
    lines.append(f"  browse it: eplb-evolve ui {s.run_dir} --open")
    return lines
