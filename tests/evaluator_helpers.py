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
