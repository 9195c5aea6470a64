"""`eplb-evolve runs | show`: list campaign runs, and look into one: best versions, lineage, a step's diff.

Run names resolve under `./results/` (or `--results DIR`), from the working directory like every path.
"""
from __future__ import annotations

import argparse
import difflib
import fcntl
import time
from pathlib import Path
from typing import Any

from evolve import members, resume
from evolve.archive import Archive
from evolve.campaign_cli import ARCHIVE, RESULTS
from evolve.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    runs = subparsers.add_parser("runs", help="list campaign runs",
                                 description="List the runs in each DIR (a run directory, or a folder of runs).")
    runs.add_argument("dirs", nargs="*", metavar="DIR", help="run directories or folders of runs (default: ./results)")
    runs.add_argument("--root", "--results", dest="root", metavar="DIR",
                      help="a folder of runs, as a positional DIR (default: ./results)")
    runs.set_defaults(func=cmd_runs)

    show = subparsers.add_parser("show", help="show a run's best versions, a program's lineage or a step's diff")
    show.add_argument("run", metavar="RUN", help="run directory, or its name under ./results")
    show.add_argument("--results", default=str(RESULTS), metavar="DIR", help="where run names are looked up")
    which = show.add_mutually_exclusive_group()
    which.add_argument("--best", action="store_true", help="lineage of the best program")
    which.add_argument("--lineage", metavar="PROGRAM", help="lineage of a program (id or unique prefix)")
    which.add_argument("--step", type=int, metavar="N", help="step N: its outcome, patch and diff against the parent")
    which.add_argument("--diff", metavar="PROGRAM", help="a program's (id or prefix) patch and diff against its parent")
    show.set_defaults(func=cmd_show)


# ---- runs and show ----------------------------------------------------------------------------------
def find_runs(dirs: list[Path]) -> list[Path]:
    """Run directories among `dirs`: each is a run itself or a folder holding runs (one level down)."""
    found: list[Path] = []
    for root in dirs:
        if (root / ARCHIVE).is_file():
            found.append(root)
        elif root.is_dir():
            found += sorted(p.parent for p in root.glob(f"*/{ARCHIVE}"))
    unique: dict[Path, Path] = {}
    for run in found:  # a run named twice (itself, and inside its folder) is listed once
        unique.setdefault(run.resolve(), run)
    return list(unique.values())


def run_row(run_dir: Path) -> dict[str, Any]:
    """One run as numbers and names: what `runs` prints."""
    archive = Archive(run_dir / ARCHIVE)
    try:
        q = archive.conn.execute
        steps = q("SELECT COUNT(*) FROM steps").fetchone()[0]
        evals = q("SELECT COUNT(*) FROM steps WHERE kind = 'evaluated'").fetchone()[0]
        best = q("SELECT MAX(score) FROM versions").fetchone()[0]
        finished = archive.events("run_finished")
        holdout = archive.events("holdout")
        config = archive.meta("config") or {}
        stamp = archive.meta("task_stamp") or {}
        created = archive.meta("created_at")
        seed = archive.meta("seed")
    finally:
        archive.close()
    dataset = stamp.get("dataset") if isinstance(stamp.get("dataset"), dict) else {}
    options = (config.get("task") or {}).get("options") or {}
    h = holdout[-1]["detail"] if holdout else {}
    return {
        "run": run_dir.name, "path": str(run_dir),
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else "-",
        "dataset": dataset.get("name") or options.get("dataset") or "-",
        "split": dataset.get("split") or options.get("split") or "-",
        "seed": seed if seed is not None else (config.get("campaign") or {}).get("seed", "-"),
        "steps": steps, "evaluations": evals, "best": best,
        "holdout_best": h.get("best"), "holdout_seed": h.get("seed"),
        "proposer": str((config.get("proposer") or {}).get("kind", "?")).rsplit(":", 1)[-1],
        "status": _status(run_dir, finished[-1]["detail"].get("reason", "") if finished else "incomplete"),
    }


def cmd_runs(args: argparse.Namespace) -> int:
    dirs = [Path(d) for d in [*args.dirs, *([args.root] if args.root else [])]] or [RESULTS]
    runs = find_runs(dirs)
    where = ", ".join(str(d.resolve()) for d in dirs)
    if not runs:
        print(f"no runs in {where}; start one with `eplb-evolve run`, or name folders: eplb-evolve runs DIR ...")
        return 0
    print(f"runs in {where}")

    def num(value: Any, width: int) -> str:
        return f"{'-' if value is None else f'{value:.5g}':>{width}}"

    print(f"{'run':<24} {'date':<16} {'dataset':<14} {'split':<8} {'seed':>5} {'steps':>6} {'evals':>6} "
          f"{'best':>9} {'holdout':>9} {'(seed)':>9} {'proposer':<9} status")
    for run_dir in runs:
        r = run_row(run_dir)
        print(f"{r['run'][:24]:<24} {r['date']:<16} {str(r['dataset'])[:14]:<14} {str(r['split'])[:8]:<8} "
              f"{str(r['seed']):>5} {r['steps']:>6} {r['evaluations']:>6} {num(r['best'], 9)} "
              f"{num(r['holdout_best'], 9)} {num(r['holdout_seed'], 9)} {r['proposer'][:9]:<9} {r['status']}")
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
    named = Path(getattr(args, "results", RESULTS)) / args.run
    if not (run_dir / ARCHIVE).is_file() and (named / ARCHIVE).is_file():
        run_dir = named
    if not (run_dir / ARCHIVE).is_file():
        raise UserError(f"no run at {args.run} (nor at {named}); list runs with `eplb-evolve runs`")
    archive = Archive(run_dir / ARCHIVE)
    try:
        versions = archive.versions()
        if getattr(args, "step", None) is not None or getattr(args, "diff", None):
            print("\n".join(step_lines(archive, args.step, args.diff)))
            return 0
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
            print(f"  v{v['version']:03d} {v['program_id'][:12]} score {v['score']:.6g} step {v['idx']:>5}  "
                  f"{v['path']}")
        for line in members.archive_lines(archive):  # a suite: seed and best on each member
            print(line)
        if versions:
            print(f"lineage of the best: eplb-evolve show {run_dir} --best; a step's diff: --step N")
        return 0
    finally:
        archive.close()


def step_lines(archive: Archive, idx: int | None, program: str | None) -> list[str]:
    """A step (or the step that made a program): its outcome, patch name and description, and its diff."""
    steps = archive.steps()
    if program:
        pid = archive.resolve(program)
        step = next((s for s in steps if s.program_id == pid), None)
    else:
        step = next((s for s in steps if s.idx == idx), None)
        if step is None:
            raise UserError(f"no step {idx} in {archive.path}; steps run from 0 to {len(steps) - 1}")
        pid = step.program_id
    record = archive.program(pid) if pid else None
    lines = []
    if step is not None:
        lines.append(f"step {step.idx}: {step.kind}" + (f" ({step.error})" if step.error else ""))
        lines.append(f"  parent {(step.parent_id or '-')[:12]}; island {step.island}; proposer {step.proposer or '-'} "
                     f"{step.model or ''}".rstrip())
    if record is None:
        text = (step.detail or {}).get("patch_text", "") if step is not None else ""
        lines.append("  no program came of it" + ("; the proposer's patch was:" if text else ""))
        return lines + ([text.rstrip()] if text else [])
    result = archive.result(record.id)
    score = "incorrect" if result is None or not result.correct else f"{result.score:.6g}"
    lines.append(f"  program {record.id[:12]} (generation {record.generation}, score {score}); "
                 f"patch {record.patch_name or 'seed'}")
    if record.patch_description.strip():
        lines += [f"  {line}" for line in record.patch_description.strip().splitlines()]
    diff = record.patch_diff or _diff_against_parent(archive, record)
    lines.append(diff.rstrip() if diff.strip() else "  (no diff: this is the seed)")
    return lines


def _diff_against_parent(archive: Archive, record: Any) -> str:
    if not record.parent_id:
        return ""
    parent = archive.program(record.parent_id)
    return "\n".join(difflib.unified_diff(parent.code.splitlines(), record.code.splitlines(),
                                          f"parent {parent.id[:12]}", f"child {record.id[:12]}", lineterm=""))


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
