"""Candidates per hour of a campaign against what the published evaluator needs for the same programs.

Both sides score the same distinct programs (every balancer under candidates/, each copy carrying its
own constant) on the standard configuration: the deepseek-v3 search split, predictive protocol, R=288,
8 groups, 4 nodes, 32 GPUs, 12 windows of 100 steps (11 planned and scored).

- ours: `EplbTask.evaluate` end to end, the way one campaign worker calls it: a sandboxed worker per
  program, its calls, the contract check, simulation, migration model and scores (the reference
  balancer is timed once, before the clock starts, as a campaign's first evaluation does);
- published: the balancer called in-process on each planning window and the next window scored by the
  loop-based simulation of `tests/published_reference.py` (per slot, per GPU, per layer, in Python, as
  the published evaluators do). Reading the trace file is left out, which favours the published side.

Two ratios are printed: candidates per hour (which includes each program's own calls, the same work on
both sides), and the evaluator's own cost per candidate (everything but the programs' calls). Target:
at least 50x. The machine may be shared with other work: the ratios, measured in the same run, are the
figures to trust.

Run: `.venv/bin/python bench/bench_vs_published.py [--copies 2]`
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluator.task import EplbTask, EvalOptions  # noqa: E402
from tests import published_reference as published  # noqa: E402

TARGET = 50.0


def programs(copies: int) -> list[tuple[str, str]]:
    """(name, source) of every bundled balancer, `copies` distinct copies each."""
    sources = sorted((path.stem, path.read_text()) for path in (REPO / "candidates").glob("*.py"))
    return [(f"{name}#{i}", text + f"\n\nBENCH_VARIANT = {i}  # makes every program distinct\n")
            for i in range(copies) for name, text in sources]


def published_seconds(source: str, windows: list[np.ndarray], task: EplbTask) -> tuple[float, float]:
    """Wall time of the published protocol for one program, and the part spent in the program's calls."""
    namespace: dict = {"__name__": "candidate"}
    exec(compile(source, "<candidate>", "exec"), namespace)
    rebalance = namespace["rebalance_experts"]
    calls = 0.0

    def timed(*args):  # type: ignore[no-untyped-def]
        nonlocal calls
        started = time.perf_counter()
        out = rebalance(*args)
        calls += time.perf_counter() - started
        return out

    started = time.perf_counter()
    published.evaluate(timed, windows, *task.args)
    return time.perf_counter() - started, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=2, help="distinct copies of each bundled balancer")
    args = parser.parse_args()
    task = EplbTask(EvalOptions())
    windows = [*task.plan_windows, task.score_windows[-1].numpy().astype(np.int64)]
    batch = programs(args.copies)
    print(f"{len(batch)} programs, {len(task.plan_windows)} planned windows each, standard configuration; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    assert task.evaluate(batch[0][1]).correct  # the sandbox's start and the reference's timing, off the clock

    ours, ours_eval_s, theirs, theirs_calls = [], [], [], []
    for i, (name, source) in enumerate(batch):
        started = time.perf_counter()
        result = task.evaluate(source)
        ours.append(time.perf_counter() - started)
        if not result.correct:
            raise SystemExit(f"{name} failed: {result.error}")
        ours_eval_s.append(result.metrics["harness_overhead_s"])
        seconds, calls = published_seconds(source, windows, task)
        theirs.append(seconds)
        theirs_calls.append(calls)
        print(f"\r{i + 1}/{len(batch)} programs", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    per_window = (sum(theirs) - sum(theirs_calls)) / len(batch) / len(task.plan_windows)
    print(f"load average {os.getloadavg()[0]:.1f} at the end; the published loop scored one window in "
          f"{per_window * 1e3:.0f} ms")

    ours_s, theirs_s = statistics.mean(ours), statistics.mean(theirs)
    ours_eval = statistics.median(ours_eval_s)
    theirs_eval = statistics.median(t - c for t, c in zip(theirs, theirs_calls))
    rate, published_rate = 3600 / ours_s, 3600 / theirs_s
    print(f"{'':28}{'ours':>14}{'published':>14}{'ratio':>10}")
    print(f"{'candidates per hour':28}{rate:>14.0f}{published_rate:>14.0f}{rate / published_rate:>9.1f}x")
    print(f"{'seconds per candidate':28}{ours_s:>14.3f}{theirs_s:>14.3f}")
    print(f"{'evaluator cost per candidate':28}{ours_eval * 1e3:>11.1f} ms{theirs_eval * 1e3:>11.1f} ms"
          f"{theirs_eval / max(ours_eval, 1e-9):>9.1f}x")
    print("  (evaluator cost: ours is the harness overhead of bench_sandbox.py, everything but the program's calls "
          "and its untimed warm-up call; published: everything but the program's calls)")
    for label, ratio in (("candidates per hour", rate / published_rate),
                         ("evaluator cost", theirs_eval / max(ours_eval, 1e-9))):
        print(f"target: {label} at least {TARGET:.0f}x the published evaluator's: {ratio:.1f}x, "
              f"{'met' if ratio >= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
