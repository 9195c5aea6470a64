"""Evaluations per minute with 1, 2 and 4 workers, on the local backend and on Ray, as ratios to one local worker.

The batch is fixed: distinct programs (the seed and greedy_snake, each copy carrying its own constant, so
every program is new to the evaluator) on a DeepSeek-shaped synthetic trace (58 layers x 256 experts,
1200 steps, R=288 on 32 GPUs in 4 nodes). Startup is left out: each backend first evaluates one program
per worker (actors placed, tasks built, sandbox zygotes warm), then the clock runs over the batch.

Here:          .venv/bin/python bench/bench_throughput.py
On a cluster:  python bench/bench_throughput.py --backends ray --ray-address auto --workers 1 8 32 --programs 256
(Ray here starts on loopback with as many logical CPUs as the largest worker count; the actors build the
trace themselves from the options, so a cluster needs no data files.)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import torch

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluator.task import EplbTask, EvalOptions  # noqa: E402
from evaluator.traces import Trace  # noqa: E402
from evolve.backends import BackendContext, make_backend  # noqa: E402

LAYERS, EXPERTS, GROUPS = 58, 256, 8
FACTORY = f"{Path(__file__).resolve()}:make_bench_task"


def synthetic_trace(steps: int, seed: int) -> Trace:
    """Skewed Poisson loads in DeepSeek-V3's shape; the same counts for the same (steps, seed) anywhere."""
    rng = np.random.default_rng(seed)
    popularity = rng.gamma(0.6, 1.0, size=(LAYERS, EXPERTS))
    counts = rng.poisson(popularity[None] * 30, size=(steps, LAYERS, EXPERTS))
    return Trace(counts, {"name": f"bench-deepseek-{steps}-{seed}", "num_groups": GROUPS})


def make_bench_task(options: dict[str, Any]) -> EplbTask:
    """Task factory for both backends: Ray actors call it on their own node with the same options."""
    options = dict(options)
    trace = synthetic_trace(int(options.pop("steps")), int(options.pop("trace_seed")))
    return EplbTask(EvalOptions(**options), trace=trace)


def programs(count: int, start: int = 0) -> list[str]:
    """`count` distinct programs: seed and greedy_snake alternately, each with its own constant."""
    sources = [(REPO / "candidates" / f"{name}.py").read_text() for name in ("seed", "greedy_snake")]
    return [sources[i % 2] + f"\n\nBENCH_VARIANT = {start + i}  # makes every program distinct\n"
            for i in range(count)]


def measure(backend_name: str, workers: int, options: dict[str, Any], batch: list[str], address: str) -> float:
    """Evaluations per minute over `batch`, after one warm-up evaluation per worker."""
    task = make_bench_task(options)
    backend = make_backend(backend_name, BackendContext(task, workers, FACTORY, options, address))
    try:
        warm = [backend.submit(code) for code in programs(workers, start=-10_000)]
        check(warm)
        started = time.perf_counter()
        futures = [backend.submit(code) for code in batch]
        check(futures)
        return len(batch) / (time.perf_counter() - started) * 60
    finally:
        backend.close()


def check(futures: list[Future]) -> None:
    for future in futures:
        result = future.result()
        if not result.correct:
            raise SystemExit(f"a benchmark program failed: {result.error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--backends", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--programs", type=int, default=24, help="programs in the timed batch")
    parser.add_argument("--steps", type=int, default=1200, help="trace steps (windows of 100)")
    parser.add_argument("--ray-address", default="", help="an existing cluster (auto or HOST:PORT); default: local")
    args = parser.parse_args()

    options = dict(dataset="bench-deepseek", steps=args.steps, trace_seed=0, timeout_s=120.0)
    batch = programs(args.programs)
    if "ray" in args.backends:
        import ray

        from evolve.ray_backend import connect

        if not args.ray_address:  # loopback, one logical CPU per worker even where cores are fewer
            ray.init(address="local", num_cpus=max(args.workers), include_dashboard=False,
                     _node_ip_address="127.0.0.1", log_to_driver=False, logging_level="warning")
        else:
            connect(args.ray_address)
        print(f"ray: {ray.cluster_resources().get('CPU', 0):g} CPUs in the cluster")
    print(f"{len(batch)} programs, trace {LAYERS}x{EXPERTS}x{args.steps} steps, {os.cpu_count()} cores on this machine")

    rates: dict[tuple[str, int], float] = {}
    for name in args.backends:
        for workers in args.workers:
            rates[name, workers] = measure(name, workers, options, batch, args.ray_address)
            print(f"  {name} x{workers}: {rates[name, workers]:.0f} evaluations/min", flush=True)
    base_key = ("local", min(args.workers)) if "local" in args.backends else (args.backends[0], min(args.workers))
    base = rates[base_key]
    print(f"\n{'backend':<8} {'workers':>7} {'evals/min':>10} {'vs ' + base_key[0] + ' x' + str(base_key[1]):>12} "
          f"{'scaling':>8}")
    for (name, workers), rate in rates.items():
        own = rates[name, min(args.workers)]
        print(f"{name:<8} {workers:>7} {rate:>10.0f} {rate / base:>11.2f}x {rate / own:>7.2f}x")


if __name__ == "__main__":
    main()
