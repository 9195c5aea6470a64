"""`eplb-evolve leaderboard | compare | report | promote`: what a campaign's programs are worth.

leaderboard  every candidate on named datasets and splits under every scorer, with oracle and ceiling rows
compare      paired comparison of programs on the same windows, with bootstrap intervals
report       figures and a self-contained report.html for a run
promote      copy an archived program into candidates/ with a header recording where it came from
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

from evaluator.results import compare as cmp
from evaluator.results import leaderboard as lb
from evaluator.evaluate_cli import add_task_arguments, task_options
from evaluator.task import EplbTask, EvalOptions
from evolve.archive import Archive
from evolve.errors import UserError

DEFAULT_SPLIT = "holdout"  # comparisons and leaderboards are final numbers: scored on data the search never saw
LEADERBOARD_DIR = Path("results") / "leaderboard"


def register(subparsers: argparse._SubParsersAction) -> None:
    board = subparsers.add_parser("leaderboard", help="score candidates on datasets under every scorer",
                                  description="Evaluate candidate balancers on each dataset and split under every scorer "
                                              "(runtimes measured in the same session), with an oracle and a ceiling row.")
    board.add_argument("programs", nargs="*", metavar="CANDIDATE",
                       help="names in candidates/ or .py files (default: every file in candidates/)")
    _task_flags(board)
    board.add_argument("--oracle", default="best", metavar="NAME",
                       help="the candidate to also plan in-sample as the oracle row: a name, best (default: the best "
                            "by native score) or none")
    board.add_argument("--no-ceiling", action="store_true", help="leave out the lower-bound ceiling row")
    board.add_argument("--repeats", type=int, default=1, metavar="N",
                       help="evaluate every candidate N times, interleaved, and keep the median-runtime run (default 1)")
    board.add_argument("--out", default=str(LEADERBOARD_DIR), metavar="DIR",
                       help=f"where leaderboard.csv and leaderboard.md go (default {LEADERBOARD_DIR})")
    board.add_argument("--candidates-dir", default=str(lb.CANDIDATES_DIR), metavar="DIR", help="where candidates live")
    board.set_defaults(func=cmd_leaderboard)

    comp = subparsers.add_parser("compare", help="paired comparison of programs on the same windows",
                                 description="Compare each program against the first on the same scored windows: mean "
                                             "difference with a bootstrap 95%% interval, win rate, runtime ratio.")
    comp.add_argument("programs", nargs="+", metavar="PROGRAM", help="the baseline first, then the programs to compare")
    _task_flags(comp)
    comp.add_argument("--metric", default="balancedness_gpu", choices=cmp.PER_WINDOW_METRICS,
                      help="per-window metric to compare (default balancedness_gpu, the native score)")
    comp.add_argument("--resamples", type=int, default=10000, metavar="N", help="bootstrap resamples (default 10000)")
    comp.add_argument("--bootstrap-seed", type=int, default=0, metavar="S", help="numpy seed of the bootstrap (default 0)")
    comp.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    comp.add_argument("--candidates-dir", default=str(lb.CANDIDATES_DIR), metavar="DIR", help="where candidates live")
    comp.set_defaults(func=cmd_compare)

    rep = subparsers.add_parser("report", help="figures and a self-contained report.html for a run")
    rep.add_argument("run", metavar="RUN", help="run directory, or its name under results/")
    rep.add_argument("--references", nargs="*", metavar="CANDIDATE",
                     help="candidates to evaluate beside the seed and best (default: every candidate but the seed)")
    rep.add_argument("--no-evaluate", action="store_true",
                     help="evaluate nothing: figures from the archive only, no leaderboard rows")
    rep.add_argument("--out", metavar="DIR", help="where the report goes (default: RUN/report)")
    rep.add_argument("--candidates-dir", default=str(lb.CANDIDATES_DIR), metavar="DIR", help="where candidates live")
    rep.set_defaults(func=cmd_report)

    pro = subparsers.add_parser("promote", help="copy an archived program into candidates/")
    pro.add_argument("run", metavar="RUN", help="run directory, or its name under results/")
    pro.add_argument("program", metavar="PROGRAM_ID", help="program id or unique prefix (see `eplb-evolve show RUN`)")
    pro.add_argument("--name", help="file name in candidates/, without .py (default: from the patch name)")
    pro.add_argument("--force", action="store_true", help="replace an existing candidate of that name")
    pro.add_argument("--candidates-dir", default=str(lb.CANDIDATES_DIR), metavar="DIR", help="where candidates live")
    pro.set_defaults(func=cmd_promote)


def _task_flags(parser: argparse.ArgumentParser) -> None:
    """The shared task flags; --dataset and --split take comma-separated lists here, split defaults to holdout."""
    add_task_arguments(parser, lists=True, split_default=DEFAULT_SPLIT)


def _lists(args: argparse.Namespace) -> tuple[list[str], list[str], dict[str, Any]]:
    options = task_options(args)
    datasets = _split_list(options.pop("dataset", EvalOptions().dataset))
    splits = _split_list(options.pop("split", DEFAULT_SPLIT))
    if not datasets or not splits:
        raise UserError("--dataset and --split need at least one name each")
    EvalOptions.from_dict(options)  # a bad option fails before any work
    return datasets, splits, options


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()]


# ---- leaderboard -------------------------------------------------------------------------------------------
def cmd_leaderboard(args: argparse.Namespace) -> int:
    datasets, splits, options = _lists(args)
    programs = lb.discover(args.programs, Path(args.candidates_dir))
    scorer = options.get("scorer", "native")
    spec = lb.BoardSpec(programs, datasets, splits, options, oracle=args.oracle, ceiling=not args.no_ceiling,
                        repeats=args.repeats, scorer=scorer)
    df = lb.build(spec, progress=lb.stderr_progress)
    csv_path, md_path = lb.write_board(df, Path(args.out), scorer)
    print(lb.format_board(df, scorer))
    print(f"\nwritten: {csv_path}, {md_path}")
    return 0 if bool(df.loc[df["kind"] == "candidate", "correct"].all()) else 1


# ---- compare ---------------------------------------------------------------------------------------------
def cmd_compare(args: argparse.Namespace) -> int:
    if len(args.programs) < 2:
        raise UserError("compare needs at least two programs: the baseline first, then the others")
    if args.resamples < 100:
        raise UserError(f"--resamples must be at least 100 for a 95% interval, got {args.resamples}")
    datasets, splits, options = _lists(args)
    programs = lb.discover(args.programs, Path(args.candidates_dir))
    stamps, results = cmp.evaluate_all(programs, datasets, splits, options)
    comparisons = cmp.compare_results([p.name for p in programs], results, args.metric, args.bootstrap_seed,
                                      args.resamples)
    report = cmp.CompareReport(args.metric, args.bootstrap_seed, args.resamples, stamps, comparisons)
    print(report.to_json() if args.json else cmp.format_report(report))
    return 0 if all(not c.failures for c in comparisons) else 1


# ---- report ----------------------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from evolve import report

    run_dir = report.resolve_run(args.run)
    run = report.load_run(run_dir)
    references: list[report.Reference] = []
    table, note = None, ""
    if not args.no_evaluate:
        try:
            table, references, note = _report_rows(run, args)
        except UserError as exc:  # the figures still come from the archive
            note = f"no leaderboard rows: {exc}"
            print(f"warning: {note}", file=sys.stderr)
    files = report.build_report(run_dir, "balancedness_gpu", "runtime_median_s", "balancedness_gpu", references,
                                table, note, Path(args.out) if args.out else None)
    print(f"report: {files.html}")
    for path in files.figures.values():
        print(f"figure: {path}")
    return 0


def _report_rows(run: Any, args: argparse.Namespace) -> tuple[pd.DataFrame | None, list[Any], str]:
    task = run_task(run.meta)
    if task is None:
        return None, [], "the run's task is not the EPLB task; no leaderboard rows"
    names = args.references
    programs = [p for p in lb.discover(names or (), Path(args.candidates_dir)) if names or p.name != "seed"]
    table, references = report_board(task, run, programs)
    dataset = task.stamp()["dataset"]
    note = (f"evaluated now on the run's task ({dataset['name']}, {dataset['split']}, protocol "
            f"{task.options.protocol}); archive points were timed during the campaign, so compare runtimes "
            "within this table")
    return table, references, note


def run_task(meta: dict[str, Any]) -> EplbTask | None:
    """The EPLB task a run was scored with, rebuilt from its stored config (None for another task)."""
    task_config = (meta.get("config") or {}).get("task") or {}
    if task_config.get("factory", "evaluator.task:make_task") != "evaluator.task:make_task":
        return None
    return EplbTask(EvalOptions.from_dict(dict(task_config.get("options") or {})))


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

    run_dir = resolve_run(args.run)
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
        raise UserError(f"cannot make a file name from '{args.name or record.patch_name}'; give --name NAME (letters, digits, _)")
    target = Path(args.candidates_dir) / f"{name}.py"
    if target.exists() and not args.force:
        raise UserError(f"{target} exists; choose another --name or pass --force to replace it")
    header = promote_header(run_dir, record, result, chain)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(header + record.code)
    tmp.replace(target)
    print(f"promoted {pid[:12]} to {target}")
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

