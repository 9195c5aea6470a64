"""Harness overhead per candidate, before and after, in the same run, with where the time goes.

Overhead is everything an evaluation costs except the balancer's own calls (the timed calls and the
untimed warm-up call): getting a worker, handing it the job, loading the program, decoding, checking
the contract, simulating, the migration model, locality (`cross_node`), scoring and the speed memo.
Every contestant evaluates the seed on the standard configuration (deepseek-v3 search split,
predictive, 58 layers x 256 experts, R=288, 8 groups, 4 nodes, 32 GPUs: 11 planned windows), each in a
process of its own, in turns, so machine load hits them alike. A turn is one unrecorded lead-in
evaluation and `--per-turn` recorded ones back to back (the steady state of a campaign: a finished
worker's exit overlaps the next evaluation, as it does there); after its turn a contestant kills its
last worker and waits 50 ms, so no contestant's work falls into another's turn:

- `after`: this checkout, isolated (the default path);
- `before`: the evaluator at `--before` (default: where this branch left main), extracted with
  `git archive` into a temporary directory and run with the same virtual environment, isolated;
- `opt-out`: this checkout with `--unsafe-no-isolation` (no bubblewrap, no namespaces).

Beside the wall-clock overhead it prints the CPU time the evaluating thread itself used per candidate
(`harness CPU`), which moves less with the machine's load (the worker's and zygote's CPU are not in it).

Target: at most 15 ms per candidate isolated. The machine this runs on may be shared: the ratio
measured in the same run is the figure to trust, the absolute milliseconds move with the load.

`--replay` times the parent-side stages alone (contract check, simulation, migration, locality, scores,
speed memo): every evaluation gets fresh copies of one real run's replies after a 64 MB pass that pushes
them out of cache, with no sandbox and no calls; before and after only.

Run: `.venv/bin/python bench/bench_sandbox.py [--evaluations 15] [--per-turn 3] [--before REV|none] [--replay]`
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 0.015

# Runs inside each contestant's process, with that contestant's checkout first on sys.path. It only uses
# what every version of the evaluator has (EplbTask, EvalOptions, evaluate, harness_overhead_s), and
# wraps the parent-side stages by name where they exist.
DRIVER = r'''
import json, sys, time
import torch
torch.set_num_threads(1)
from evaluator.task import EplbTask, EvalOptions
import evaluator.task as T

options, seed_path = json.loads(sys.argv[1]), sys.argv[2]
task = EplbTask(EvalOptions(**options))
seed = open(seed_path).read()
stages = {}

def timed(owner, name, label):
    inner = getattr(owner, name, None)
    if inner is None:
        return
    def wrapper(*args, **kwargs):
        started = time.perf_counter_ns()
        try:
            return inner(*args, **kwargs)
        finally:
            stages[label] = stages.get(label, 0) + time.perf_counter_ns() - started
    setattr(owner, name, wrapper)

if sys.argv[3] == "replay":
    timed(task, "evaluate", "evaluate")
for name, label in (("validate_placements", "contract check"), ("simulate", "simulation"),
                    ("migration_cost", "migration model"), ("measure", "locality"), ("remembered", "speed memo")):
    timed(T, name, label)
run = task.sandbox.run

def sandbox_run(*args, **kwargs):
    started = time.perf_counter_ns()
    out = run(*args, **kwargs)
    total = time.perf_counter_ns() - started
    balancer = sum(out.call_ns) + out.warmup_ns + out.reference_cost_ns
    stages["sandbox (all but the calls)"] = total - balancer
    for key, value in getattr(out, "stages_ns", {}).items():
        stages["  sandbox: " + key] = value
    return out

sandbox_run.__wrapped__ = run
task.sandbox.run = sandbox_run
assert task.evaluate(seed).correct  # starts the zygote and times the reference
if sys.argv[3] == "replay":
    # parent-side stages alone: every evaluation gets fresh copies of one real run's replies, after a pass
    # over 64 MB that pushes them and the task's arrays out of cache, as a real run's waits do; the
    # copying and the pass are taken off the overhead
    import dataclasses
    import numpy as np
    recorded, flush, replay_ns = task.sandbox.run.__wrapped__(seed, task.plan_windows, task.args), np.ones(8 << 20), [0]

    def replay(*args, **kwargs):
        started = time.perf_counter_ns()
        copies = [tuple(np.array(a, copy=True) for a in p) for p in recorded.placements]
        flush.sum()
        out = dataclasses.replace(recorded, placements=copies, stages_ns={})
        replay_ns[0] = time.perf_counter_ns() - started
        return out

    task.sandbox.run = replay
print(json.dumps({"windows": len(task.plan_windows)}), flush=True)
import evaluator.sandbox.harness as H
for line in sys.stdin:
    rows = []
    if sys.argv[3] != "replay":
        task.evaluate(seed)  # a lead-in, not recorded: the turn's recorded evaluations all find a steady state
    for _ in range(int(line)):
        stages.clear()
        cpu = time.thread_time()
        result = task.evaluate(seed)
        cpu = time.thread_time() - cpu
        assert result.correct, result.error
        overhead = result.metrics["harness_overhead_s"]
        if sys.argv[3] == "replay":  # the recorded calls were not made: the overhead is the wall time less the copies
            overhead = (stages.pop("evaluate") - replay_ns[0]) / 1e9
        rows.append({"overhead": overhead, "call": result.metrics["runtime_median_s"],
                     "cpu": cpu, "stages": dict(stages)})
    if hasattr(H, "drain_releases"):  # a finished worker's exit, left for the next evaluation, is this turn's
        H.drain_releases()
    time.sleep(0.05)  # let it end before the next contestant's turn
    print(json.dumps(rows), flush=True)
'''


class Contestant:
    """One evaluator in a process of its own, evaluating the seed on request."""

    def __init__(self, name: str, checkout: Path, options: dict, mode: str = "real") -> None:
        self.name = name
        env = dict(os.environ, PYTHONPATH=str(checkout))
        self.process = subprocess.Popen(
            [sys.executable, "-c", DRIVER, json.dumps(options), str(REPO / "candidates" / "seed.py"), mode],
            cwd=checkout, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.windows = json.loads(self._line())["windows"]
        self.rows: list[dict] = []

    def _line(self) -> str:
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise SystemExit(f"{self.name}: the evaluator process ended (see its error above)")
        return line

    def evaluate(self, count: int) -> None:
        self.process.stdin.write(f"{count}\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        self.rows.extend(json.loads(self._line()))

    def close(self) -> None:
        self.process.stdin.close()  # type: ignore[union-attr]
        self.process.wait(timeout=60)

    def median(self, key: str) -> float:
        return statistics.median(row[key] for row in self.rows)

    def stage_medians(self) -> dict[str, float]:
        names = dict.fromkeys(name for row in self.rows for name in row["stages"])
        return {name: statistics.median(row["stages"].get(name, 0) for row in self.rows) / 1e6 for name in names}


def extract(revision: str, into: Path) -> Path:
    """The checkout at `revision`, as files (no git worktree: nothing else of the repository changes)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=15, help="evaluations per contestant")
    parser.add_argument("--per-turn", type=int, default=3, help="evaluations per contestant's turn (after one "
                        "unrecorded lead-in evaluation)")
    parser.add_argument("--before", default="", help="git revision of the old evaluator (default: the merge-base "
                        "with main); 'none' to compare with the opt-out only")
    parser.add_argument("--replay", action="store_true", help="time the parent-side stages alone: each evaluation "
                        "replays fresh copies of one real run's replies (no sandbox, no calls), after a cache flush")
    args = parser.parse_args()
    mode = "replay" if args.replay else "real"
    before = args.before or subprocess.run(["git", "-C", str(REPO), "merge-base", "HEAD", "main"],
                                           capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="eplb-bench-before-") as tmp:
        contestants = [Contestant("after", REPO, {}, mode)]
        if before and before != "none":
            old = extract(before, Path(tmp))
            contestants.append(Contestant(f"before ({before[:10]})", old, {}, mode))
        if not args.replay:  # replayed replies meet no sandbox: the opt-out would time the same code as `after`
            contestants.append(Contestant("opt-out", REPO, {"unsafe_no_isolation": True}))
        print(f"standard configuration, {contestants[0].windows} planned windows per candidate; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
        try:
            turns = -(-args.evaluations // args.per_turn)
            for i in range(turns):
                count = min(args.per_turn, args.evaluations - i * args.per_turn)
                for contestant in contestants if i % 2 else contestants[::-1]:  # alternate who goes first
                    contestant.evaluate(count)
                print(f"\r{min((i + 1) * args.per_turn, args.evaluations)}/{args.evaluations} evaluations per "
                      "contestant", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
        finally:
            for contestant in contestants:
                contestant.close()
    print(f"load average {os.getloadavg()[0]:.1f} at the end (the figures move with it)\n")
    print("where the time goes, median ms per candidate:")
    table = {c.name: c.stage_medians() for c in contestants}
    names = list(dict.fromkeys(name for stages in table.values() for name in stages))
    print(f"{'':34}" + "".join(f"{c.name:>24}" for c in contestants))
    for name in names:
        print(f"{name:34}" + "".join(
            f"{table[c.name][name]:>24.2f}" if name in table[c.name] else f"{'-':>24}" for c in contestants))
    print()
    for c in contestants:
        overheads = sorted(row["overhead"] for row in c.rows)
        print(f"{c.name:>22}: harness overhead {c.median('overhead') * 1e3:6.1f} ms per candidate "
              f"(p10 {overheads[len(overheads) // 10] * 1e3:.1f}, max {overheads[-1] * 1e3:.1f}); "
              f"harness CPU {c.median('cpu') * 1e3:.1f} ms; seed {c.median('call') * 1e3:.2f} ms per call")
    after = contestants[0].median("overhead")
    if contestants[1].name.startswith("before"):
        print(f"before / after: {contestants[1].median('overhead') / max(after, 1e-9):.2f}x less overhead per "
              "candidate, measured in this run")
    if args.replay:
        print(f"replayed replies: the parent-side stages alone, {after * 1e3:.1f} ms per candidate (the sandbox's "
              "share and the contention with its standby worker are not in this figure)")
        return
    print(f"after / opt-out: {after / max(contestants[-1].median('overhead'), 1e-9):.2f}x")
    print(f"target: at most {TARGET_S * 1e3:.0f} ms per candidate isolated; after: {after * 1e3:.1f} ms: "
          f"{'met' if after <= TARGET_S else 'NOT met'}")


if __name__ == "__main__":
    main()
