"""What the locality metric (evaluator.locality, `cross_node`) costs, and what it shows.

On the standard configuration (deepseek-v3 search split, R=288, 8 groups, 4 nodes, 32 GPUs, windows of
100 steps, predictive) the trace gets synthetic group-limited route samples (each token's top-8 experts
inside its top-4 groups, drawn from the trace's own per-layer load), then:
1. the seed is evaluated on the trace with and without the samples, alternately: the ratio of the
   median evaluation times is what locality adds (target: at most 1.05x); as that ratio is at the mercy
   of a busy machine, the locality computation is also timed alone, as a share of the evaluation
   without samples (target: at most 5%);
2. cross_node of the seed (hierarchical: groups packed onto nodes) and greedy_snake (global).

Run: `.venv/bin/python bench/bench_locality.py [--tokens-per-step 16] [--evaluations 5]`
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluator.locality import measure  # noqa: E402
from evaluator.task import EplbTask, EvalOptions  # noqa: E402
from evaluator.traces import Trace  # noqa: E402
from tests.evaluator_helpers import sample_routes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def with_routes(trace: Trace, tokens_per_step: int, num_groups: int, seed: int = 0) -> Trace:
    """A copy of `trace` carrying route samples drawn from its per-layer expert popularity."""
    rng = np.random.default_rng(seed)
    popularity = trace.counts.sum(axis=0).astype(np.float64) + 1.0  # [L, E]
    samples = trace.steps * tokens_per_step
    started = time.perf_counter()
    routes = sample_routes(popularity, samples, num_groups, top_groups=4, top_k=8, rng=rng)
    print(f"sampled {samples} tokens x {trace.num_layers} layers in {time.perf_counter() - started:.1f} s",
          flush=True)
    routed = Trace(trace.counts, dict(trace.meta))
    routed.routes = routes
    routed.route_steps = np.repeat(np.arange(trace.steps, dtype=np.int64), tokens_per_step)
    return routed


def evaluation_seconds(task: EplbTask, code: str, evaluations: int) -> tuple[float, dict[str, float]]:
    times = []
    for _ in range(evaluations):
        started = time.perf_counter()
        result = task.evaluate(code)
        times.append(time.perf_counter() - started)
        assert result.correct, result.error
    return statistics.median(times), result.metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens-per-step", type=int, default=16, help="route samples per step (default 16)")
    parser.add_argument("--evaluations", type=int, default=5)
    args = parser.parse_args()

    plain = EplbTask(EvalOptions(reference_calls=0))
    routed_trace = with_routes(plain.trace, args.tokens_per_step, plain.num_groups)
    routed = EplbTask(EvalOptions(reference_calls=0), trace=routed_trace)
    seed_code = (REPO / "candidates" / "seed.py").read_text()
    snake_code = (REPO / "candidates" / "greedy_snake.py").read_text()
    plain.evaluate(seed_code), routed.evaluate(seed_code)  # warm both sandboxes

    # alternate the two, so a busy neighbour on the machine slows both alike
    without, with_ = [], []
    for _ in range(args.evaluations):
        without.append(evaluation_seconds(plain, seed_code, 1)[0])
        with_.append(evaluation_seconds(routed, seed_code, 1)[0])
    base, loaded = statistics.median(without), statistics.median(with_)

    run = routed.sandbox.run(seed_code, routed.plan_windows, routed.args)
    plans = np.stack([p[0] for p in run.placements])
    tokens = routed.window_tokens
    alone = []
    for _ in range(max(20, args.evaluations)):
        started = time.perf_counter()
        measure(plans, tokens, routed.options.num_nodes, routed.trace.num_experts)
        alone.append(time.perf_counter() - started)
    ratio, share = loaded / base, statistics.median(alone) / base
    print(f"seed evaluation ({len(routed.plan_windows)} windows): {base * 1e3:.0f} ms without route samples, "
          f"{loaded * 1e3:.0f} ms with {tokens.plan.size} of {tokens.sampled} scored samples measured; ratio "
          f"{ratio:.3f}x (target <= 1.05x: {'met' if ratio <= 1.05 else 'MISSED'})")
    print(f"locality alone: {statistics.median(alone) * 1e3:.1f} ms median ({min(alone) * 1e3:.1f} ms best), "
          f"{share:.1%} of an evaluation (target <= 5%: {'met' if share <= 0.05 else 'MISSED'})")

    for name, code in (("seed", seed_code), ("greedy_snake", snake_code)):
        m = routed.evaluate(code).metrics
        print(f"{name}: cross_node {m['cross_node']:.3f} nodes per token and layer "
              f"(share on more than one node {m['cross_node_share']:.3f}), balancedness_gpu "
              f"{m['balancedness_gpu']:.4f}")


if __name__ == "__main__":
    main()
