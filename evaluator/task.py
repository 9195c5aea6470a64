"""The EPLB task: implements `evolve.task.Task` by running a balancer in the sandbox and scoring it.

Data flow: trace -> windows -> (planning windows to the sandbox) -> placements -> contract check ->
simulation on the scoring windows -> metrics -> scorers -> `Result`. The scoring windows never enter
the sandbox in the predictive protocol: window i+1 is sent only after the plan for window i came back.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluator import EVALUATOR_VERSION
from evaluator.contract import validate_placements
from evaluator.sandbox.harness import Sandbox, SandboxLimits, SandboxRun
from evaluator.scoring import get_scorer, score_all, speed_octaves
from evaluator.speed_memo import remembered, timing_key
from evaluator.simulate import Simulation, simulate
from evaluator import traces
from evolve.errors import UserError
from evolve.task import Objective, Result
from evaluator.paths import REPO_ROOT

PROTOCOLS = ("predictive", "in-sample")


@dataclass(frozen=True)
class EvalOptions:
    """Everything that changes an EPLB score. Defaults are the standard published configuration."""

    dataset: str = "deepseek-v3"  # a dataset name (`eplb-evolve traces list`) or a trace file
    split: str = "search"  # `search` while searching, `holdout` for final reports
    protocol: str = "predictive"  # plan on window i, score on i+1; or `in-sample`: score on i
    window: int = 100  # steps per window
    max_windows: int = 0  # 0: every window of the trace
    scorer: str = "balance-speed"  # docs/search.md: balance plus whole octaves of speed
    device: str = "cpu"  # where the balancer runs and the simulation happens
    num_replicas: int = 288
    num_groups: int = 0  # 0: from the trace's model shape (1 when it has none)
    num_nodes: int = 4
    num_gpus: int = 32
    timeout_s: float = 60.0
    memory_mb: int = 4096
    threads: int = 1
    reference_calls: int = 3
    reference: str = "candidates/seed.py"
    first_stage_windows: int = 3  # windows scored by the cascade's cheap first stage (docs/search.md)
    speed_memo: bool = True  # reuse this machine's first measured speed octave of a program (docs/search.md)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvalOptions":
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise UserError(f"unknown task option '{key}'; known: {', '.join(known)}")
            default = known[key].default
            try:
                values[key] = type(default)(value) if not isinstance(value, type(default)) else value
            except (TypeError, ValueError):
                raise UserError(f"task option '{key}' must be a {type(default).__name__}, got {value!r}") from None
        options = cls(**values)
        options.check()
        return options

    def check(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise UserError(f"task option 'protocol' must be one of {', '.join(PROTOCOLS)}, got '{self.protocol}'")
        get_scorer(self.scorer)
        if self.first_stage_windows < 1:
            raise UserError(f"task option 'first_stage_windows' must be at least 1, got {self.first_stage_windows}")
        if self.window <= 0:
            raise UserError(f"task option 'window' must be a positive number of steps, got {self.window}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UserError(f"task option 'device' must be cpu or cuda, got '{self.device}'")
        if self.num_replicas % self.num_gpus or self.num_gpus % self.num_nodes:
            raise UserError(
                f"num_replicas ({self.num_replicas}) must divide by num_gpus ({self.num_gpus}), "
                f"and num_gpus by num_nodes ({self.num_nodes})"
            )


def load_task_trace(options: EvalOptions) -> traces.Trace:
    """The trace a set of options names: a `.npz` path, or a dataset name and split."""
    path = Path(options.dataset)
    if path.suffix == ".npz" and path.exists():
        return traces.load_npz(path)
    loader = getattr(traces, "load_trace", None)
    if loader is None:
        raise UserError(f"'{options.dataset}' is not a trace file; give a path to a .npz trace")
    return loader(options.dataset, options.split)


class EplbTask:
    """Scores balancer programs on one trace under one protocol and scorer."""

    name = "eplb"
    entry_function = "rebalance_experts"

    def __init__(self, options: EvalOptions | None = None, trace: traces.Trace | None = None) -> None:
        self.options = options or EvalOptions()
        self.options.check()
        self._first_stage: EplbTask | None = None
        # The harness's tensors are small: extra intra-op threads only add synchronisation (on a 2-core
        # machine a 200k-element reduction took 25 ms with 2 threads and 0.1 ms with one).
        torch.set_num_threads(1)
        self.trace = trace if trace is not None else load_task_trace(self.options)
        windows = self.trace.windows(self.options.window)
        if self.options.max_windows:
            windows = windows[: self.options.max_windows]
        predictive = self.options.protocol == "predictive"
        if predictive and windows.size(0) < 2:
            raise UserError(
                f"the predictive protocol needs at least 2 windows; the trace has {windows.size(0)} of "
                f"{self.options.window} steps (use a smaller --window or --protocol in-sample)"
            )
        num_experts = self.trace.num_experts
        if self.options.num_replicas < num_experts:
            raise UserError(f"num_replicas ({self.options.num_replicas}) is below the number of experts ({num_experts})")
        self.plan_windows = [w.numpy().astype(np.int64) for w in (windows[:-1] if predictive else windows)]
        self.score_windows = windows[1:] if predictive else windows
        self.num_groups = self.options.num_groups or int(self.trace.meta.get("num_groups") or 1)
        reference_path = REPO_ROOT / self.options.reference
        self.sandbox = Sandbox(
            SandboxLimits(
                timeout_s=self.options.timeout_s,
                memory_mb=self.options.memory_mb,
                threads=self.options.threads,
                reference_calls=self.options.reference_calls,
            ),
            reference_code=reference_path.read_text() if reference_path.exists() else None,
            entry=self.entry_function,
            device=self.options.device,
        )

    # ---- the cascade's first stage (evolve.task.StagedTask) -------------------------------------------
    def evaluate_first_stage(self, program_text: str) -> Result:
        """Balance on the first `first_stage_windows` scoring windows, with no reference timing: the stage
        judges balance and correctness only, and costs a fraction of the full evaluation."""
        if self._first_stage is None:
            stage_windows = min(self.options.first_stage_windows, self.score_windows.size(0))
            extra = 1 if self.options.protocol == "predictive" else 0
            options = dataclasses.replace(self.options, max_windows=stage_windows + extra, reference_calls=0)
            self._first_stage = EplbTask(options, trace=self.trace)
        return self._first_stage.evaluate(program_text)

    def first_stage_of(self, result: Result) -> Result:
        """A full result seen as its first stage: balance over the same first windows, no speed term."""
        if not result.correct or not result.per_window:
            return Result(correct=False, error=result.error or "no per-window results", **self.stamp())
        head = result.per_window[: max(1, self.options.first_stage_windows)]
        metrics = {k: v for k, v in result.metrics.items() if k not in ("speedup_vs_reference", "speed_octaves")}
        for key in ("balancedness_gpu", "balancedness_expert", "balancedness_node"):
            metrics[key] = float(np.mean([w[key] for w in head]))
        runtimes = [w["runtime_s"] for w in head]
        metrics.update(runtime_mean_s=float(np.mean(runtimes)), runtime_median_s=float(np.median(runtimes)),
                       windows=float(len(head)))
        return Result(correct=True, metrics=metrics, scores=score_all(metrics), **self.stamp())

    def prompt_metrics(self) -> list[str]:
        """What a model should see of a program (evolve.task.DescribedTask): no harness internals."""
        return ["balancedness_gpu", "balancedness_gpu_worst", "balancedness_expert", "balancedness_node",
                "runtime_median_s", "speedup_vs_reference", "speed_octaves", "reference_runtime_median_s"]

    def mutation_catalogue(self) -> dict[str, list]:
        """Alternative implementations of the seed's EVOLVE blocks, for the offline mutator."""
        from evaluator.mutations import CATALOGUE

        return CATALOGUE

    def with_options(self, **changes: Any) -> "EplbTask":
        """The same task with some options changed (for example `split="holdout"`)."""
        return EplbTask(dataclasses.replace(self.options, **changes))

    @property
    def args(self) -> tuple[int, int, int, int]:
        o = self.options
        return (o.num_replicas, self.num_groups, o.num_nodes, o.num_gpus)

    def stamp(self) -> dict[str, Any]:
        return {
            "evaluator_version": EVALUATOR_VERSION,
            "dataset": {
                "name": str(self.trace.meta.get("name", self.options.dataset)),
                "split": str(self.trace.meta.get("split", self.options.split)),
                "sha256": self.trace.sha256,
            },
            "scorer": self.options.scorer,
        }

    def objectives(self) -> list[Objective]:
        return [
            Objective(self.options.scorer, maximise=True, deterministic=not get_scorer(self.options.scorer).uses_time),
            Objective("runtime_median_s", maximise=False, deterministic=False),
        ]

    def problem_statement(self) -> str:
        o = self.options
        return (
            "Write `rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus)` for Mixture-of-"
            "Experts expert-parallel load balancing. `weight` is an int64 tensor [layers, experts] of tokens "
            "routed to each expert. Return (phy2log [layers, num_replicas], log2phy [layers, experts, X], logcnt "
            "[layers, experts]), all int64: phy2log gives the expert in each physical slot; logcnt the replica "
            "count of each expert (every expert >= 1, each row sums to num_replicas); log2phy lists each "
            "expert's slots, padded with -1. Slot s lives on GPU s // (num_replicas / num_gpus); GPU g on node "
            "g // (num_gpus / num_nodes). A token for an expert is split evenly across its replicas. "
            f"The plan is made on one window of {o.window} steps and scored on the "
            f"{'next' if o.protocol == 'predictive' else 'same'} window (R={o.num_replicas}, "
            f"{self.num_groups} expert groups, {o.num_nodes} nodes, {o.num_gpus} GPUs). "
            f"Objective: maximise the '{o.scorer}' score ({get_scorer(o.scorer).formula}); keep the balancer "
            "fast (runtime per call is measured and reported). No file, network or process access.\n"
            f"Shape in numbers: weight is [{self.trace.num_layers}, {self.trace.num_experts}] (layers x experts), "
            f"{o.num_replicas} slots ({o.num_replicas - self.trace.num_experts} redundant), "
            f"{o.num_replicas // o.num_gpus} slots per GPU, {o.num_gpus} GPUs, {o.num_nodes} nodes, "
            f"{self.num_groups} expert groups of {self.trace.num_experts // max(1, self.num_groups)}; "
            f"{len(self.plan_windows)} windows are planned and scored, one call each. The reference balancer for "
            f"speed is {o.reference}."
        )

    def evaluate(self, program_text: str) -> Result:
        # checked here, where evaluation happens: a CPU-only head may drive GPU workers (e.g. on Ray)
        if self.options.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("task option 'device' is cuda but torch sees no CUDA device here; use --device cpu")
        started = time.perf_counter()
        stamp = self.stamp()
        run = self.sandbox.run(program_text, self.plan_windows, self.args)
        streams = {"stdout": run.stdout, "stderr": run.stderr}
        if not run.ok:
            return Result.failure(run.error, **stamp, **streams)
        if len(run.placements) != len(self.plan_windows):
            return Result.failure(
                f"the worker answered {len(run.placements)} of {len(self.plan_windows)} windows", **stamp, **streams
            )
        problem = validate_placements(
            run.placements, self.trace.num_layers, self.trace.num_experts, self.options.num_replicas,
            self.score_windows.numpy(),
        )
        if problem:
            return Result.failure(problem, **stamp, **streams)
        device = torch.device(self.options.device)
        sim = simulate(
            self.score_windows.to(device),
            torch.from_numpy(np.stack([p[0] for p in run.placements])).to(device),
            torch.from_numpy(np.stack([p[2] for p in run.placements])).to(device),
            self.options.num_gpus,
            self.options.num_nodes,
        )
        metrics = self._metrics(sim, run)
        self._remember_speed(program_text, metrics)
        scores = score_all(metrics)
        per_window = self._per_window(sim, run)
        feedback = self._feedback(metrics, per_window, sim)
        balancer_s = (sum(run.call_ns) + sum(run.reference_ns) + run.warmup_ns) / 1e9
        metrics["harness_overhead_s"] = max(0.0, time.perf_counter() - started - balancer_s)
        return Result(
            correct=True,
            metrics=metrics,
            scores=scores,
            per_window=per_window,
            feedback=feedback,
            **stamp,
            **streams,
        )

    def _metrics(self, sim: Simulation, run: SandboxRun) -> dict[str, float]:
        calls = np.array(run.call_ns, dtype=np.float64) / 1e9
        wall = np.array(run.wall_ns, dtype=np.float64) / 1e9
        ref = np.array(run.reference_ns, dtype=np.float64) / 1e9
        median = float(np.median(calls))
        metrics = {
            "balancedness_gpu": float(sim.balancedness_gpu.mean()),
            "balancedness_expert": float(sim.balancedness_expert.mean()),
            "balancedness_node": float(sim.balancedness_node.mean()),
            "balancedness_gpu_worst": float(sim.balancedness_gpu.min()),
            "speedup": sim.speedup,
            "runtime_median_s": median,
            "runtime_mean_s": float(calls.mean()),
            "runtime_p10_s": float(np.percentile(calls, 10)),
            "runtime_p90_s": float(np.percentile(calls, 90)),
            "runtime_wall_median_s": float(np.median(wall)),
            "windows": float(len(calls)),
        }
        if ref.size:
            metrics["reference_runtime_median_s"] = float(np.median(ref))
            metrics["speedup_vs_reference"] = float(np.median(ref)) / max(median, 1e-12)
        return metrics

    def _remember_speed(self, program_text: str, metrics: dict[str, float]) -> None:
        """Fix the program's speed octave to the first one measured on this machine (see evaluator.speed_memo)."""
        if "speedup_vs_reference" not in metrics:
            return
        measured = speed_octaves(metrics)
        if self.options.speed_memo:
            o = self.options
            conditions = {"evaluator": EVALUATOR_VERSION, "trace": self.trace.sha256, "args": self.args,
                          "windows": len(self.plan_windows), "protocol": o.protocol, "window": o.window,
                          "device": o.device, "threads": o.threads, "reference": self.sandbox.reference_code}
            measured = remembered(timing_key(program_text, conditions), measured)
        metrics["speed_octaves"] = float(measured)

    def _per_window(self, sim: Simulation, run: SandboxRun) -> list[dict[str, float]]:
        offset = 1 if self.options.protocol == "predictive" else 0
        return [
            {
                "window": float(i + offset),
                "balancedness_gpu": float(sim.balancedness_gpu[i]),
                "balancedness_expert": float(sim.balancedness_expert[i]),
                "balancedness_node": float(sim.balancedness_node[i]),
                "layer_time": float(sim.layer_time[i]),
                "identity_time": float(sim.identity_time[i]),
                "runtime_s": run.call_ns[i] / 1e9,
            }
            for i in range(len(run.call_ns))
        ]

    def _feedback(self, metrics: dict[str, float], per_window: list[dict[str, float]], sim: Simulation) -> str:
        worst = min(per_window, key=lambda w: w["balancedness_gpu"])
        layer_balance = (sim.gpu_load.mean(-1).sum(0) / sim.gpu_load.amax(-1).sum(0).clamp_min(1e-12)).cpu()
        worst_layers = torch.argsort(layer_balance)[:3].tolist()
        lines = [
            f"balancedness_gpu {metrics['balancedness_gpu']:.4f} (worst window {int(worst['window'])}: "
            f"{worst['balancedness_gpu']:.4f}), balancedness_expert {metrics['balancedness_expert']:.4f}, "
            f"balancedness_node {metrics['balancedness_node']:.4f}, speed-up over no balancing {metrics['speedup']:.3f}x",
            "layers with the worst GPU balance: "
            + ", ".join(f"{layer} ({float(layer_balance[layer]):.3f})" for layer in worst_layers),
            f"runtime {metrics['runtime_median_s'] * 1e3:.2f} ms median per call",
        ]
        if "speedup_vs_reference" in metrics:
            lines[-1] += f" ({metrics['speedup_vs_reference']:.2f}x the reference balancer's speed)"
        return "\n".join(lines)


def make_task(options: dict[str, Any] | None = None) -> EplbTask:
    """Factory used by campaign configs: validates option names and values."""
    return EplbTask(EvalOptions.from_dict(options or {}))
