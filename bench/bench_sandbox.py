"""Harness overhead per candidate: the OS-isolated sandbox against the unisolated one, in the same run.

Overhead is everything an evaluation costs except the balancer's own calls: handing the worker its job,
loading the program, moving windows and placements, decoding, checking, simulating and scoring. Both
sandboxes evaluate the seed on the standard configuration (58 layers x 256 experts, R=288, 8 groups,
4 nodes, 32 GPUs, the default dataset, 12 windows), interleaved so that machine load hits both alike.
Targets: isolated at most 1.2x the unisolated overhead, and at most 50 ms.

Run: `.venv/bin/python bench/bench_sandbox.py [--evaluations 15]`
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluator.task import EplbTask, EvalOptions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--evaluations", type=int, default=15, help="evaluations per sandbox")
    parser.add_argument("--windows", type=int, default=12)
    args = parser.parse_args()
    seed = (REPO / "candidates" / "seed.py").read_text()
    tasks = {
        "isolated": EplbTask(EvalOptions(max_windows=args.windows)),
        "unisolated": EplbTask(EvalOptions(max_windows=args.windows, unsafe_no_isolation=True)),
    }
    for name, task in tasks.items():  # start each zygote and time the reference once
        started = time.perf_counter()
        assert task.evaluate(seed).correct
        print(f"{name}: warm-up {time.perf_counter() - started:.1f} s ({len(task.plan_windows)} calls per evaluation)")
    overhead: dict[str, list[float]] = {name: [] for name in tasks}
    calls: dict[str, list[float]] = {name: [] for name in tasks}
    for i in range(args.evaluations):
        order = list(tasks.items())
        for name, task in order if i % 2 else order[::-1]:  # alternate who goes first
            result = task.evaluate(seed)
            assert result.correct, result.error
            overhead[name].append(result.metrics["harness_overhead_s"])
            calls[name].append(result.metrics["runtime_median_s"])
        print(f"\r{i + 1}/{args.evaluations} evaluations per sandbox", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    median = {name: statistics.median(values) for name, values in overhead.items()}
    for name in tasks:
        print(f"{name:>10}: harness overhead {median[name] * 1e3:6.1f} ms per candidate "
              f"(p10 {sorted(overhead[name])[len(overhead[name]) // 10] * 1e3:.1f}, max "
              f"{max(overhead[name]) * 1e3:.1f}); "
              f"seed {statistics.median(calls[name]) * 1e3:.2f} ms per call")
    ratio = median["isolated"] / max(median["unisolated"], 1e-9)
    ok = ratio <= 1.2 and median["isolated"] <= 0.050
    print(f"isolated / unisolated overhead: {ratio:.2f}x (target <= 1.2x); isolated {median['isolated'] * 1e3:.1f} ms "
          f"(target <= 50 ms): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
