"""Evaluator speed, as ratios against baselines measured in the same run.

1. Simulating one 58-layer x 256-expert window at R=288: vectorised simulator vs a per-expert Python
   loop (the style published evaluators use). Target: at most 1 ms, at least 100x faster.
2. Harness overhead per candidate evaluation with a warm zygote (everything but the balancer calls).
   Target: at most 50 ms.
3. Seed vs greedy_snake runtime per call on the standard configuration (R=288, 8 groups, 4 nodes, 32 GPUs).

Run: `.venv/bin/python bench/bench_evaluator.py [--device cuda]`
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluator.simulate import simulate  # noqa: E402
from evaluator.task import EplbTask, EvalOptions  # noqa: E402
from evaluator.traces import Trace, save_npz  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LAYERS, EXPERTS, SLOTS, GROUPS, NODES, GPUS = 58, 256, 288, 8, 4, 32


def timeit(fn, repeat: int) -> float:
    """Median seconds per call."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def naive_simulation(load: torch.Tensor, log2phy: torch.Tensor, logcnt: torch.Tensor) -> float:
    """Per-expert loops over tensors, in the style of the published EPLB evaluators."""
    per_gpu = SLOTS // GPUS
    total_mean = total_max = 0.0
    for layer in range(LAYERS):
        gpu_load = torch.zeros(GPUS, dtype=torch.float64)
        for expert in range(EXPERTS):
            count = int(logcnt[layer, expert])
            share = load[layer, expert] / count
            for replica in range(count):
                gpu_load[int(log2phy[layer, expert, replica]) // per_gpu] += share
        total_mean += float(gpu_load.mean())
        total_max += float(gpu_load.max())
    return total_mean / total_max


def synthetic_trace(steps: int = 1300) -> Trace:
    rng = np.random.default_rng(0)
    popularity = rng.gamma(0.6, 1.0, size=(LAYERS, EXPERTS))
    return Trace(rng.poisson(popularity[None] * 30, size=(steps, LAYERS, EXPERTS)),
                 {"name": "bench", "num_groups": GROUPS})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--evaluations", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        path = save_npz(synthetic_trace(), Path(tmp) / "bench.npz")
        options = dict(dataset=str(path), device=args.device, reference_calls=3)
        seed_code = (REPO / "candidates" / "seed.py").read_text()
        snake_code = (REPO / "candidates" / "greedy_snake.py").read_text()
        task = EplbTask(EvalOptions(**options))
        task.evaluate(seed_code)  # warm the zygote

        # 1. simulation
        window = task.score_windows[:1].to(device)
        result = task.sandbox.run(seed_code, task.plan_windows[:1], task.args)
        phy2log = torch.from_numpy(result.placements[0][0].copy())[None].to(device)
        logcnt = torch.from_numpy(result.placements[0][2].copy())[None].to(device)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        def fast() -> None:
            simulate(window, phy2log, logcnt, GPUS, NODES)
            sync()

        fast_s = timeit(fast, 200)
        naive_args = (window[0].cpu(), torch.from_numpy(result.placements[0][1].copy()), logcnt[0].cpu())
        slow_s = timeit(lambda: naive_simulation(*naive_args), 3)
        fast_value = float(simulate(window, phy2log, logcnt, GPUS, NODES).balancedness_gpu)
        assert abs(naive_simulation(*naive_args) - fast_value) < 1e-9
        print(f"simulate one window ({args.device}): {fast_s * 1e3:.3f} ms; per-expert loop {slow_s * 1e3:.1f} ms; "
              f"ratio {slow_s / fast_s:.0f}x (target >= 100x, <= 1 ms: "
              f"{'met' if slow_s / fast_s >= 100 and fast_s <= 1e-3 else 'MISSED'})")

        # 2. harness overhead, 3. seed vs greedy_snake
        for name, code in (("seed", seed_code), ("greedy_snake", snake_code)):
            overheads, runtimes, totals = [], [], []
            for _ in range(args.evaluations):
                start = time.perf_counter()
                r = task.evaluate(code)
                totals.append(time.perf_counter() - start)
                assert r.correct, r.error
                overheads.append(r.metrics["harness_overhead_s"])
                runtimes.append(r.metrics["runtime_median_s"])
            overhead = statistics.median(overheads)
            print(f"{name}: evaluation {statistics.median(totals) * 1e3:.1f} ms for {int(r.metrics['windows'])} "
                  f"windows; balancer {statistics.median(runtimes) * 1e3:.2f} ms/call; harness overhead "
                  f"{overhead * 1e3:.1f} ms (all but the balancer calls) "
                  f"(target <= 50 ms: {'met' if overhead <= 0.05 else 'MISSED'}); balancedness_gpu "
                  f"{r.metrics['balancedness_gpu']:.4f}")
            if name == "seed":
                seed_runtime = statistics.median(runtimes)
            else:
                print(f"seed / greedy_snake runtime ratio: {seed_runtime / statistics.median(runtimes):.1f}x")


if __name__ == "__main__":
    main()
