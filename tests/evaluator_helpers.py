"""Small deterministic traces and programs shared by the evaluator tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluator.task import EplbTask, EvalOptions
from evaluator.traces import Trace, save_npz

REPO = Path(__file__).resolve().parents[1]
SEED_CODE = (REPO / "candidates" / "seed.py").read_text()
# a small shape that keeps every contract rule meaningful: 16 experts in 4 groups, 24 slots on 8 GPUs
SMALL = dict(num_replicas=24, num_groups=4, num_nodes=2, num_gpus=8)


def skewed_trace(steps: int = 400, layers: int = 4, experts: int = 16, seed: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    popularity = rng.gamma(0.6, 1.0, size=(layers, experts)) + 0.01
    counts = rng.poisson(popularity[None] * 50, size=(steps, layers, experts))
    return Trace(counts, {"name": f"skewed-{seed}", "num_groups": 4})


def small_task(tmp_path: Path, **options) -> EplbTask:
    path = save_npz(skewed_trace(), tmp_path / "small.npz")
    settings = dict(SMALL, dataset=str(path), timeout_s=20.0, reference_calls=1)
    settings.update(options)
    return EplbTask(EvalOptions(**settings))


def wrap_seed(twist: str) -> str:
    """The seed balancer with its output bent by `twist` (code that may change p, l, c)."""
    body = "\n".join("    " + line for line in twist.strip().splitlines())
    return (
        SEED_CODE
        + "\n\n_seed_rebalance = rebalance_experts\n\n"
        + "def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):\n"
        + "    p, l, c = _seed_rebalance(weight, num_replicas, num_groups, num_nodes, num_gpus)\n"
        + body
        + "\n    return p, l, c\n"
    )


def sample_routes(popularity: np.ndarray, num_tokens: int, num_groups: int, top_groups: int, top_k: int,
                  rng: np.random.Generator, chunk: int = 256) -> np.ndarray:
    """Group-limited top-k routing of `num_tokens` tokens: `[S, L, K]` expert ids, distinct per layer.

    Each token perturbs log-popularity with Gumbel noise (so picks follow popularity, without repeats),
    keeps the `top_groups` groups whose best expert scores highest, then its `top_k` best experts in them."""
    layers, experts = popularity.shape
    out = np.empty((num_tokens, layers, top_k), dtype=np.int16)
    for start in range(0, num_tokens, chunk):
        n = min(chunk, num_tokens - start)
        logits = np.log(popularity)[None] + rng.gumbel(size=(n, layers, experts))
        grouped = logits.reshape(n, layers, num_groups, experts // num_groups)
        best_groups = np.argsort(-grouped.max(-1), axis=-1)[..., :top_groups]
        allowed = np.zeros(grouped.shape[:-1], dtype=bool)
        np.put_along_axis(allowed, best_groups, True, axis=-1)
        logits = np.where(np.repeat(allowed, experts // num_groups, axis=-1), logits, -np.inf)
        out[start:start + n] = np.argsort(-logits, axis=-1)[..., :top_k]
    return out


def routed_trace(steps: int = 300, layers: int = 4, experts: int = 64, num_groups: int = 8, top_groups: int = 4,
                 top_k: int = 8, tokens_per_step: int = 16, seed: int = 0) -> Trace:
    """A trace whose every token is a route sample: counts are the routes' per-step expert tallies."""
    rng = np.random.default_rng(seed)
    popularity = rng.gamma(0.6, 1.0, size=(layers, experts)) + 0.01
    routes = sample_routes(popularity, steps * tokens_per_step, num_groups, top_groups, top_k, rng)
    route_steps = np.repeat(np.arange(steps, dtype=np.int64), tokens_per_step)
    flat = (route_steps[:, None, None] * layers + np.arange(layers)[None, :, None]) * experts + routes
    counts = np.bincount(flat.ravel(), minlength=steps * layers * experts).reshape(steps, layers, experts)
    trace = Trace(counts, {"name": f"routed-{seed}", "num_groups": num_groups})
    trace.routes, trace.route_steps = routes, route_steps
    return trace
