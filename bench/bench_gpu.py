"""The evaluator on CPU and on CUDA, as ratios to CPU measured in the same run.

1. Trace generation: the default DeepSeek-V3 trace (58 layers x 256 experts, 1200 steps) per device, and
   whether both devices give the same counts (content sha256).
2. Evaluator throughput: evaluations per minute of the seed on that trace (R=288, 8 groups, 4 nodes,
   32 GPUs), the balancer and the simulation both on the device, and the largest metric difference.
3. Seed vs greedy_snake: median time per balancer call on each device.

One command, from a fresh checkout with torch and numpy (tqdm optional), under 3 minutes on one H100:
    python bench/bench_gpu.py                 # cpu, plus cuda when torch sees a GPU
    python bench/bench_gpu.py --device cpu    # cpu only
The table is printed and, when $OUT is set, also written to $OUT/gpu_bench.txt.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import torch

torch.set_num_threads(1)  # the harness's tensors are small; extra threads only add synchronisation
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
try:
    import tqdm  # noqa: F401 - the trace generator's progress bar
except ImportError:  # a bare GPU image: give the generator a bar that does nothing

    class _NoBar:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def update(self, n: int = 1) -> None:
            pass

        def close(self) -> None:
            pass

    sys.modules["tqdm"] = types.ModuleType("tqdm")
    sys.modules["tqdm"].tqdm = _NoBar  # type: ignore[attr-defined]

from evaluator.task import EplbTask, EvalOptions  # noqa: E402
from evaluator.traces import Trace, generator  # noqa: E402

PLACEMENT_METRICS = ("balancedness_gpu", "balancedness_expert", "balancedness_node", "speedup")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def generate(device: str, steps: int) -> tuple[Trace, float]:
    params = generator.TraceParams(steps=steps)
    return timed(lambda: generator.generate("deepseek-v3", params, device=device, progress=False))


def throughput(task: EplbTask, code: str, evaluations: int) -> tuple[float, dict[str, float]]:
    """Evaluations per minute (after one warm-up) and the last result's metrics."""
    first = task.evaluate(code)
    if not first.correct:
        raise SystemExit(f"the seed failed on {task.options.device}: {first.error}")
    start = time.perf_counter()
    for _ in range(evaluations):
        result = task.evaluate(code)
    return evaluations / (time.perf_counter() - start) * 60, result.metrics


def call_time(task: EplbTask, code: str, repeats: int) -> float:
    """Median balancer time per call (the sandbox's own clock), over `repeats` evaluations."""
    return statistics.median(task.evaluate(code).metrics["runtime_median_s"] for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="", help="cpu, cuda, or empty for cpu plus cuda when available")
    parser.add_argument("--steps", type=int, default=generator.TraceParams().steps, help="trace steps")
    parser.add_argument("--evaluations", type=int, default=10, help="timed evaluations per device")
    args = parser.parse_args()
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no CUDA device")
    seed = (REPO / "candidates" / "seed.py").read_text()
    snake = (REPO / "candidates" / "greedy_snake.py").read_text()

    raw: dict[str, dict[str, float]] = {}
    traces: dict[str, Trace] = {}
    metrics: dict[str, dict[str, float]] = {}
    for device in devices:
        print(f"[{device}] generating the trace ...", flush=True)
        traces[device], gen_s = generate(device, args.steps)
        task = EplbTask(EvalOptions(dataset="deepseek-v3", device=device), trace=traces[device])
        print(f"[{device}] evaluating ...", flush=True)
        rate, metrics[device] = throughput(task, seed, args.evaluations)
        seed_call = call_time(task, seed, 3)
        snake_call = call_time(task, snake, 3)
        raw[device] = {"gen": gen_s, "rate": rate, "seed": seed_call, "snake": snake_call}

    base = raw["cpu"] if "cpu" in raw else raw[devices[0]]
    shape = generator.PRESETS["deepseek-v3"]
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    lines = [f"trace deepseek-v3 {shape.layers}x{shape.experts}x{args.steps} steps; {args.evaluations} timed "
             f"evaluations per device; torch {torch.__version__}; {gpu}",
             f"{'measure':<34}" + "".join(f"{d:>12}" for d in devices) + (f"{'gpu gain':>10}" * (len(devices) > 1))]

    def row(label: str, key: str, fmt: Callable[[float], str], better_high: bool) -> None:
        values = [raw[d][key] for d in devices]
        text = f"{label:<34}" + "".join(f"{fmt(v):>12}" for v in values)
        if len(devices) > 1:
            ratio = values[-1] / base[key] if better_high else base[key] / values[-1]
            text += f"{ratio:>9.2f}x"
        lines.append(text)

    row("trace generation (s)", "gen", lambda v: f"{v:.2f}", better_high=False)
    row("evaluations/min (seed)", "rate", lambda v: f"{v:.0f}", better_high=True)
    row("seed call (ms)", "seed", lambda v: f"{v * 1e3:.2f}", better_high=False)
    row("greedy_snake call (ms)", "snake", lambda v: f"{v * 1e3:.2f}", better_high=False)
    for device in devices:
        lines.append(f"{device}: seed {raw[device]['seed'] / raw[device]['snake']:.1f}x greedy_snake's time per call")
    if len(devices) > 1:
        same = len({t.sha256 for t in traces.values()}) == 1
        diff = max(abs(metrics[d][k] - metrics[devices[0]][k]) for d in devices for k in PLACEMENT_METRICS)
        lines.append(f"same trace on every device: {'yes' if same else 'NO'} (sha256 "
                     f"{traces[devices[0]].sha256[:12]}); largest placement-metric difference {diff:.2e}")
        lines.append("gpu gain: how many times faster cuda is than cpu (below 1x: slower)")
    table = "\n".join(lines)
    print(table)
    if os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / "gpu_bench.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table + "\n")
        print(f"written to {path}")


if __name__ == "__main__":
    main()
