"""`eplb-evolve leaderboard | compare | promote`, and EPLB's part of `report`: what a campaign's programs are worth.

leaderboard  every candidate on named datasets and splits under every scorer, with oracle and ceiling rows
compare      paired comparison of programs on the same windows, with bootstrap intervals
report       (evolve.report_cli) the EPLB sections: leaderboard rows, re-timed runtimes, the other splits
promote      copy an archived program into candidates/ with a header recording where it came from

Paths resolve from the working directory, as `run` does: candidates from `./candidates/` (or
`--candidates DIR`), runs and tables under `./results/` (or `--results DIR`). Read-only commands fall
back to the candidates bundled with the install when the working directory has none; `promote` always
writes to the working directory's folder. Each command prints (on stderr) where it reads and writes.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from evaluator.evaluate_cli import add_task_arguments, task_options
from evaluator.results import compare as cmp
from evaluator.results import leaderboard as lb
from evaluator.results import standing
from evaluator.suite import SuiteTask
from evaluator.task import EplbTask, EvalOptions, build_task
from evolve.archive import Archive
from evolve.errors import UserError
from evolve.report_cli import ReportExtras

# comparisons and leaderboards are final numbers: a bundled dataset's holdout and holdout-model splits (data the
# search never saw; another router model), an imported trace whole (`leaderboard.REPORT_SPLITS`)
DEFAULT_SPLIT = "holdout and holdout-model for a bundled dataset, all for an imported trace"
RESULTS_DIR = Path("results")
LEADERBOARD_DIR = RESULTS_DIR / "leaderboard"
CANDIDATES = Path("candidates")


def register(subparsers: argparse._SubParsersAction) -> None:
    board = subparsers.add_parser("leaderboard", help="score candidates on datasets under every scorer",
                                  description="Evaluate candidate balancers on each dataset and split under every "
                                              "scorer (runtimes measured in the same session), with an oracle and a "
                                              "ceiling row.")
    board.add_argument("programs", nargs="*", metavar="CANDIDATE",
                       help="names in candidates/ or .py files (default: every file in candidates/)")
    _task_flags(board)
    board.add_argument("--oracle", default="best", metavar="NAME",
                       help="the candidate to also plan in-sample as the oracle row: a name, best (default: the best "
                            "by native score) or none")
    board.add_argument("--no-ceiling", action="store_true", help="leave out the lower-bound ceiling row")
    board.add_argument("--repeats", type=int, default=lb.DEFAULT_REPEATS, metavar="N",
                       help="evaluate every candidate N times, interleaved, keep the median-runtime run and print the "
                            f"spread of the runtimes (default {lb.DEFAULT_REPEATS})")
    board.add_argument("--out", default=str(LEADERBOARD_DIR), metavar="DIR",
                       help=f"where leaderboard.csv and leaderboard.md go (default {LEADERBOARD_DIR})")
    _candidates_flag(board)
    board.set_defaults(func=cmd_leaderboard)

    comp = subparsers.add_parser("compare", help="paired comparison of programs on the same windows",
                                 description="Compare each program against the first on the same scored windows: mean "
                                             "difference with a bootstrap 95% interval, win rate, runtime ratio.")
    comp.add_argument("programs", nargs="+", metavar="PROGRAM",
                      help="candidate names or .py files: the baseline first, then the programs to compare")
    _task_flags(comp)
    comp.add_argument("--metric", default="balancedness_gpu", choices=cmp.PER_WINDOW_METRICS,
                      help="per-window metric to compare (default balancedness_gpu, the native score)")
    comp.add_argument("--resamples", type=int, default=10000, metavar="N", help="bootstrap resamples (default 10000)")
    comp.add_argument("--bootstrap-seed", type=int, default=0, metavar="S",
                      help="numpy seed of the bootstrap (default 0)")
    comp.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    _candidates_flag(comp)
    comp.set_defaults(func=cmd_compare)

    pro = subparsers.add_parser("promote", help="copy an archived program into candidates/")
    pro.add_argument("run", metavar="RUN", help="run directory, or its name under results/")
    pro.add_argument("program", metavar="PROGRAM_ID", help="program id or unique prefix (see `eplb-evolve show RUN`)")
    pro.add_argument("--name", metavar="NAME",
                     help="file name in candidates/, without .py (default: from the patch name)")
    pro.add_argument("--force", action="store_true", help="replace an existing candidate of that name")
    _candidates_flag(pro, writing=True)
    pro.add_argument("--results", default=str(RESULTS_DIR), metavar="DIR", help="where run names are looked up")
    pro.set_defaults(func=cmd_promote)


def _candidates_flag(parser: argparse.ArgumentParser, writing: bool = False) -> None:
    default = "./candidates" if writing else "./candidates, else the ones bundled with the install"
    parser.add_argument("--candidates", "--candidates-dir", dest="candidates_dir", metavar="DIR",
                        help=f"{'where to write the program' if writing else 'where candidates live'} (default: "
                             f"{default})")


def candidates_dir(args: argparse.Namespace, writing: bool = False) -> tuple[Path, str]:
    """The candidates folder, resolved from the working directory like every path, and a line saying so.

    Commands print the line once they succeed: a failure stays one line."""
    if args.candidates_dir:
        path, origin = Path(args.candidates_dir), "--candidates"
    elif CANDIDATES.is_dir() or writing:
        path, origin = CANDIDATES, "working directory"
    else:
        path, origin = lb.CANDIDATES_DIR, "bundled with the install: the working directory has no candidates/"
    return path, f"{'written to' if writing else 'candidates from'} {path.resolve()} ({origin})"


def data_sources() -> str:
    """Dataset manifests ship with the install; traces live in the cache: a line naming both."""
    from evaluator.paths import DATASETS_DIR
    from evaluator.traces.registry import cache_dir

    return f"datasets from {DATASETS_DIR} (bundled with the install); traces cached in {cache_dir().resolve()}"


def _task_flags(parser: argparse.ArgumentParser) -> None:
    """The shared task flags; --dataset and --split take comma-separated lists here, split defaults to
    holdout and holdout-model."""
    add_task_arguments(parser, lists=True, split_default=DEFAULT_SPLIT)


def _lists(args: argparse.Namespace) -> tuple[list[str], list[str], dict[str, Any]]:
    options = task_options(args)
    datasets = _split_list(options.pop("dataset", EvalOptions().dataset))
    given = options.pop("split", None)
    splits = _split_list(given) if given is not None else []  # none: each dataset's default
    if not datasets or (given is not None and not splits):
        raise UserError("--dataset and --split need at least one name each")
    EvalOptions.from_dict(options)  # a bad option fails before any work
    return datasets, splits, options


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()]


# ---- leaderboard -------------------------------------------------------------------------------------------
def cmd_leaderboard(args: argparse.Namespace) -> int:
    datasets, splits, options = _lists(args)
    folder, where = candidates_dir(args)
    programs = lb.discover(args.programs, folder)
    scorer = options.get("scorer", "native")
    spec = lb.BoardSpec(programs, datasets, splits, options, oracle=args.oracle, ceiling=not args.no_ceiling,
                        repeats=args.repeats, scorer=scorer)
    df = lb.build(spec, progress=lb.stderr_progress)
    csv_path, md_path = lb.write_board(df, Path(args.out), scorer)
    print(lb.format_board(df, scorer))
    print(f"\n{where}\n{data_sources()}\nwritten: {csv_path.resolve()}, {md_path.resolve()}")
    return 0 if bool(df.loc[df["kind"] == "candidate", "correct"].all()) else 1


# ---- compare ---------------------------------------------------------------------------------------------
def cmd_compare(args: argparse.Namespace) -> int:
    if len(args.programs) < 2:
        raise UserError("compare needs at least two programs: the baseline first, then the others")
    if args.resamples < 100:
        raise UserError(f"--resamples must be at least 100 for a 95% interval, got {args.resamples}")
    datasets, splits, options = _lists(args)
    folder, where = candidates_dir(args)
    programs = lb.discover(args.programs, folder)
    stamps, results = cmp.evaluate_all(programs, datasets, splits, options)
    comparisons = cmp.compare_results([p.name for p in programs], results, args.metric, args.bootstrap_seed,
                                      args.resamples)
    report = cmp.CompareReport(args.metric, args.bootstrap_seed, args.resamples, stamps, comparisons)
    print(report.to_json() if args.json else cmp.format_report(report))
    print(f"{where}\n{data_sources()}", file=sys.stderr if args.json else sys.stdout)  # --json: stdout is the object
    return 0 if all(not c.failures for c in comparisons) else 1


# ---- report ----------------------------------------------------------------------------------------------
class EplbReport:
    """The EPLB part of `eplb-evolve report` (`evolve.report_cli`): the balance and runtime figures, and
    leaderboard rows, re-timed runtimes and the other splits, evaluated now on the run's task."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--references", nargs="*", metavar="CANDIDATE",
                            help="candidates to evaluate beside the seed and best (default: every candidate but the "
                                 "seed)")
        _candidates_flag(parser)

    def extras(self, run: Any, args: argparse.Namespace) -> ReportExtras | None:
        if run.meta.get("task") != EplbTask.name:
            return None
        extras = ReportExtras("balancedness_gpu", "runtime_median_s", "balancedness_gpu")
        if args.no_evaluate:
            return extras
        try:
            table, references, note, task, programs, where = _report_rows(run, args)
            extras.table, extras.references, extras.note = table, references, note
            extras.sources += [where, data_sources()] if where else []
            if task is not None:
                extras.timing, extras.references = report_timing(task, run, references, programs)
                found = report_standing(task, run, programs)
                if found is not None and found.splits:
                    extras.splits = split_results(found)
                    extras.summary_rows, extras.summary_data = found.rows(), found.to_data()
        except UserError as exc:  # the figures still come from the archive
            extras.note = f"no leaderboard rows: {exc}"
            print(f"warning: {extras.note}", file=sys.stderr)
        return extras


REPORT = EplbReport()  # named by the EPLB plugin (evaluator/plugin.py)


def _report_rows(run: Any, args: argparse.Namespace) -> tuple[pd.DataFrame | None, list[Any], str, Any, list[Any], str]:
    task = run_task(run.meta)
    if task is None:
        return None, [], "the run's task is not the EPLB task; no leaderboard rows", None, [], ""
    if isinstance(task, SuiteTask):  # the per-member table (from the archive) stands in for the board
        raise UserError(f"a suite run ({', '.join(task.labels)}): leaderboard rows score one dataset at a time; see "
                        "the per-member table, or run `eplb-evolve leaderboard --dataset A,B`")
    names = args.references
    folder, where = candidates_dir(args)
    programs = [p for p in lb.discover(names or (), folder) if names or p.name != "seed"]
    table, references = report_board(task, run, programs)
    dataset = task.stamp()["dataset"]
    note = (f"evaluated now on the run's task ({dataset['name']}, {dataset['split']}, protocol "
            f"{task.options.protocol}); every runtime in this table was measured in this session, so they "
            "compare with each other (not with the runtimes the campaign recorded)")
    return table, references, note, task, programs, where


FRONT_RETIMED = 12  # programs of the campaign's Pareto front timed again for the report's figure


def report_timing(task: EplbTask, run: Any, references: list[Any], programs: list[lb.Program]) -> tuple[Any, list[Any]]:
    """Seed, best, the campaign's Pareto front and the reference candidates evaluated again now, one after
    another in the task's warm sandbox, so the Pareto figure compares runtimes measured in one session."""
    from evolve.report import Reference, Timing, pareto_front

    ids = [pid for pid, r in run.results.items() if r.correct and "runtime_median_s" in r.metrics]
    points = [(run.results[pid].metrics["runtime_median_s"], run.results[pid].metrics["balancedness_gpu"])
              for pid in ids]
    chosen = [ids[i] for i in pareto_front(points)][:FRONT_RETIMED]
    chosen = list(dict.fromkeys([pid for pid in (run.seed_id, run.best_id) if pid] + chosen))
    measured: dict[str, tuple[float, float]] = {}
    if chosen:  # the first evaluation of a session also pays for warming the sandbox: keep it out of the figure
        task.evaluate(run.programs[chosen[0]].code)
    for n, pid in enumerate(chosen, 1):
        lb.stderr_progress(f"timing program {n}/{len(chosen)} of the campaign's front for the Pareto figure")
        result = task.evaluate(run.programs[pid].code)
        if result.correct:
            measured[pid] = (result.metrics["runtime_median_s"], result.metrics["balancedness_gpu"])
    by_name = {p.name: p for p in programs}
    timed_refs = []
    for ref in references:  # the references too, so every point of the figure comes from this loop
        if ref.runtime_s is not None and ref.label in by_name:
            result = task.evaluate(by_name[ref.label].code)
            if not result.correct:
                continue
            ref = Reference(ref.label, result.metrics["balancedness_gpu"], result.metrics["runtime_median_s"])
        elif ref.runtime_s is not None:  # the oracle row: its balance is the point, drawn as a level
            ref = Reference(ref.label, ref.balance)
        timed_refs.append(ref)
    o, dataset = task.options, task.stamp()["dataset"]
    note = (f"Runtimes measured for this report on {time.strftime('%Y-%m-%d %H:%M')} in one session: {len(measured)} "
            f"programs (seed, best and the campaign's Pareto front) and the references, one after another in the "
            f"same warm sandbox on {o.device}; median time per call over the {dataset['name']} {dataset['split']} "
            f"windows ({o.protocol} protocol). Other archive programs are not drawn: their runtimes come from the "
            f"campaign.")
    return Timing(measured, note), timed_refs


def report_standing(task: EplbTask, run: Any, programs: list[lb.Program]) -> Any:
    """The best program against the seed and the shipped candidates on the dataset's other splits
    (`evaluator.results.standing`); None when the run has no seed or best program."""
    seed, best = run.programs.get(run.seed_id or ""), run.programs.get(run.best_id or "")
    if seed is None or best is None:
        return None
    shipped = {p.name: p.code for p in programs}
    return standing.standing(task, best.code, seed.code, shipped, say=lb.stderr_progress)


def split_results(found: Any) -> list[Any]:
    """Seed and best on each other split, as the report's per-window figure takes them."""
    from evolve.report import SplitResults

    return [SplitResults(label, by_name.get("seed"), by_name.get("best")) for label, by_name in found.results.items()]


def run_task(meta: dict[str, Any]) -> EplbTask | SuiteTask | None:
    """The EPLB task a run was scored with, rebuilt from its stored config (None for another task)."""
    task_config = (meta.get("config") or {}).get("task") or {}
    if task_config.get("factory", "evaluator.task:make_task") != "evaluator.task:make_task":
        return None
    return build_task(dict(task_config.get("options") or {}))


def report_board(task: EplbTask, run: Any, programs: list[lb.Program]) -> tuple[pd.DataFrame, list[Any]]:
    """Seed, best and reference candidates on the run's task, plus oracle (of the best) and ceiling rows."""
    from evolve.report import Reference

    archived: list[lb.Program] = []
    if run.seed_id:
        archived.append(lb.Program("seed (archive)", Path(""), run.programs[run.seed_id].code))
    if run.best_id and run.best_id != run.seed_id:
        archived.append(lb.Program(f"best (archive {run.best_id[:10]})", Path(""), run.programs[run.best_id].code))
    entries = archived + programs
    oracle = archived[-1].name if archived else "none"  # the oracle of the best program
    spec = lb.BoardSpec(entries, [], [], {}, oracle=oracle)
    df = lb.sort_board(pd.DataFrame(lb.board_for_task(task, spec, lb.stderr_progress), columns=lb.COLUMNS), "native")
    references = []
    own = {p.name for p in archived}  # the figure marks seed and best from the archive itself
    for row in df.itertuples(index=False):
        if row.kind == "ceiling":
            references.append(Reference("ceiling (lower bounds)", float(row.balancedness_gpu)))
        elif row.correct and row.entry not in own:
            references.append(Reference(str(row.entry), float(row.balancedness_gpu), float(row.runtime_ms) / 1e3))
    shown = ["entry", "kind", "native", "adrs-openevolve", "adrs-leaderboard", "balancedness_gpu",
             "balancedness_expert", "runtime_ms", "speed_vs_seed", "windows", "error"]
    return df[shown], references


# ---- promote ---------------------------------------------------------------------------------------------
def cmd_promote(args: argparse.Namespace) -> int:
    from evolve.report import resolve_run

    run_dir = resolve_run(args.run, Path(args.results))
    archive = Archive(run_dir / "archive.sqlite")
    try:
        pid = archive.resolve(args.program)
        record = archive.program(pid)
        result = archive.result(pid)
        chain = [r for r, _ in archive.lineage(pid)]
    finally:
        archive.close()
    name = args.name or record.patch_name or f"promoted_{pid[:10]}"
    name = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_").lower()[:60]
    if not re.match(r"^[a-z_][a-z0-9_]*$", name or "-"):
        raise UserError(f"cannot make a file name from '{args.name or record.patch_name}'; give --name NAME (letters, "
                        "digits, _)")
    folder, where = candidates_dir(args, writing=True)
    target = folder / f"{name}.py"
    if target.exists() and not args.force:
        raise UserError(f"{target} exists; choose another --name or pass --force to replace it")
    header = promote_header(run_dir, record, result, chain)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(header + record.code)
    tmp.replace(target)
    print(f"promoted {pid[:12]} to {target.resolve()}")
    print(f"  {where}; run from {run_dir.resolve()}")
    return 0


def promote_header(run_dir: Path, record: Any, result: Any, chain: list[Any]) -> str:
    """Comment lines recording the program's origin, lineage and scores (the code below is unchanged)."""
    lines = [
        f"promoted from run {run_dir} on {time.strftime('%Y-%m-%d')}",
        f"program {record.id} (sha256 of the code below this header)",
        f"patch: {record.patch_name or 'seed'}; parent {record.parent_id or '-'}; generation {record.generation}; "
        f"proposer {record.proposer or '-'} {record.model or ''}".rstrip(),
        "lineage, seed first: " + " -> ".join(r.patch_name or "seed" for r in chain),
    ]
    if result is not None and result.correct:
        scores = ", ".join(f"{k}={v:.6g}" for k, v in result.scores.items())
        keys = ("balancedness_gpu", "balancedness_expert", "runtime_median_s", "speedup_vs_reference")
        metrics = ", ".join(f"{k}={result.metrics[k]:.6g}" for k in keys if k in result.metrics)
        lines += [
            f"scores (chosen scorer {result.scorer}): {scores}",
            f"metrics: {metrics}",
            f"scored by evaluator {result.evaluator_version} on {json.dumps(result.dataset, sort_keys=True)}",
        ]
    elif result is not None:
        lines.append(f"INCORRECT in its run: {result.error}")
    return "".join(f"# {line}\n" for line in lines) + "\n"

