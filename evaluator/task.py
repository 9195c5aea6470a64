"""The EPLB task: implements `evolve.task.Task` by running a balancer in the sandbox and scoring it.

Data flow: trace -> windows -> (planning windows to the sandbox) -> placements -> contract check ->
simulation on the scoring windows -> metrics -> scorers -> `Result`. The scoring windows never enter
the sandbox in the predictive protocol: window i+1 is sent only after the plan for window i came back.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from evaluator import EVALUATOR_VERSION, traces
from evaluator.contract import validate_placements
from evaluator.locality import (
    UNAVAILABLE_NO_ROUTES,
    assign_windows,
    locality_metrics,
    locality_per_window,
    measure,
    pooled,
    route_samples,
)
from evaluator.migration import MigrationModel, build_model, migration_cost, migration_metrics, migration_per_window
from evaluator.paths import REPO_ROOT
from evaluator.sandbox.harness import Sandbox, SandboxLimits, SandboxRun
from evaluator.scoring import get_scorer, score_all, speed_octaves
from evaluator.simulate import Simulation, identity_gpu_load, simulate
from evaluator.speed_memo import remembered, timing_key
from evaluator.suite import AGGREGATES, Member, SuiteTask, build_members, check_suite, member_placement
from evolve.errors import UserError
from evolve.options import describe, meta, validate
from evolve.scrub import scrub_result
from evolve.task import Objective, Result, TaskBase, TaskFactory, TaskOption

PROTOCOLS = ("predictive", "in-sample")
PARTIAL_WINDOW = ("", "score", "drop")  # "": the dataset's default (`traces.DEFAULT_PARTIAL`)
# Options that change how an evaluation runs but not its scores; every other option is in the stamp, so a
# resumed campaign refuses to change it (see evolve.resume).
SEED_PROGRAM = "candidates/seed.py"  # where a campaign starts unless campaign.seed_program names another
RUN_OPTIONS = frozenset({"timeout_s", "memory_mb", "threads", "device", "reference_calls"})


@dataclass(frozen=True)
class EvalOptions:
    """Everything that changes an EPLB score. Defaults are the standard published configuration."""

    dataset: str = field(default="deepseek-v3",
                         metadata=meta("dataset name (`eplb-evolve traces list`) or a trace file"))
    # "": the dataset's default: `search` for a bundled dataset (`holdout` is for final reports), `all` for an
    # imported trace or a trace file (the whole trace, as the published evaluators score it)
    split: str = field(default="", metadata=meta(
        "empty: the dataset's own default (search for a bundled dataset, all for an imported trace); "
        "holdout (and generalisation, where it exists) for final numbers"))
    protocol: str = field(default="predictive", metadata=meta(
        "predictive: plan on window i, score on i+1; in-sample: score on the planning window", choices=PROTOCOLS))
    window: int = field(default=100, metadata=meta("steps per window"))
    # a trailing window shorter than `window`: `score` it (as the published loader does) or `drop` it;
    # "": the dataset's default (score for imported traces and files, drop for bundled datasets)
    partial_window: str = field(default="", metadata=meta(
        "a trailing window shorter than `window`: score or drop; empty: score for imported traces and files, "
        "drop for bundled datasets"))
    max_windows: int = field(default=0, metadata=meta("use only the first N windows; 0: all"))
    scorer: str = field(default="balance-speed", metadata=meta(
        "the score the search maximises: balance-speed (balance plus whole octaves of speed, docs/search.md), "
        "native, adrs-openevolve, adrs-leaderboard"))
    device: str = field(default="cpu", metadata=meta("cpu or cuda: where the balancer runs and the simulation happens"))
    num_replicas: int = field(default=288, metadata=meta("physical expert slots R"))
    num_groups: int = field(default=0, metadata=meta("expert groups; 0: the trace's model shape"))
    num_nodes: int = field(default=4, metadata=meta("nodes"))
    num_gpus: int = field(default=32, metadata=meta("GPUs"))
    timeout_s: float = field(default=60.0, metadata=meta("seconds one evaluation may take"))
    memory_mb: int = field(default=4096, metadata=meta("memory limit of the sandboxed worker"))
    threads: int = field(default=1, metadata=meta("torch threads in the worker"))
    reference_calls: int = field(default=3, metadata=meta("timed calls of the reference balancer, for speed-ups"))
    reference: str = field(default="candidates/seed.py",
                           metadata=meta("the reference balancer, relative to the install"))
    unsafe_no_isolation: bool = field(default=False, metadata=meta(
        "run candidates without OS isolation (trusted programs only); results are stamped unisolated"))
    # migration cost model (evaluator.migration; expert size from the trace's model shape, H800-class GPUs)
    migration_params_per_expert: float = field(default=0.0, metadata=meta(
        "parameters per routed expert per layer; 0: from the model shape (DeepSeek-V3: 3 x 7168 x 2048)"))
    migration_bytes_per_param: float = field(default=0.0, metadata=meta(
        "bytes per parameter moved; 0: the model's usual weights (FP8 for DeepSeek-V3, else BF16)"))
    migration_bandwidth_gbs: float = field(default=50.0, metadata=meta("GB/s into each GPU while experts move"))
    migration_gpu_tflops: float = field(default=400.0, metadata=meta(
        "effective TFLOP/s of the expert GEMMs, to turn routed tokens into seconds"))
    migration_interval_steps: int = field(default=0, metadata=meta(
        "steps a plan is kept, its transfer spread over them; 0: every scored window is a rebalance"))
    locality_tokens: int = field(default=64, metadata=meta(
        "route-sampled tokens measured per scored window for cross_node, evenly spaced over the window's samples "
        "(docs/locality.md); 0: all", min=0))
    first_stage_windows: int = field(default=3, metadata=meta(
        "windows the evaluation cascade's cheap first stage scores (campaign.cascade; docs/search.md)", min=1))
    speed_memo: bool = field(default=True, metadata=meta(
        "reuse this machine's first measured speed octave of a program, so seeded runs repeat (docs/search.md)"))
    # a suite replaces dataset/split: every child is scored on each member (evaluator.suite, docs/campaigns.md)
    suite: str | list[str] = field(default="", metadata=meta(
        "score on several datasets at once: 'NAME:SPLIT, NAME:SPLIT' or a list; empty: dataset and split alone"))
    suite_aggregate: str = field(default="mean", metadata=meta(
        "a suite's score: the mean or the worst (minimum) of its members' scores", choices=AGGREGATES))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvalOptions":
        """Options from an untrusted dict (a config's [task.options], flags, a preset): names, types and
        choices checked by evolve's option validator, then the checks that span options."""
        options = validate(cls, data, name=lambda key: f"task option '{key}'")
        options.check()
        return options

    def check(self) -> None:
        if self.protocol not in PROTOCOLS:  # checked here too: a caller may build EvalOptions directly
            raise UserError(f"task option 'protocol' must be one of {', '.join(PROTOCOLS)}, got '{self.protocol}'")
        get_scorer(self.scorer)
        if self.partial_window not in PARTIAL_WINDOW:
            raise UserError(f"task option 'partial_window' must be score or drop, got '{self.partial_window}'")
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
        self.migration_model()  # checks its values
        if self.suite:
            check_suite(self)

    def migration_model(self, model_name: str = "") -> MigrationModel:
        """The migration cost model these options describe, for a trace of model shape `model_name`."""
        return build_model(self.migration_params_per_expert, self.migration_bytes_per_param,
                           self.migration_bandwidth_gbs, self.migration_gpu_tflops, self.migration_interval_steps,
                           model_name)


def load_task_trace(options: EvalOptions) -> traces.Trace:
    """The trace a set of options names: a dataset name (with its split) or a trace file of any format."""
    return traces.load_trace(options.dataset, options.split or None)


class EplbTask(TaskBase):
    """Scores balancer programs on one trace under one protocol and scorer."""

    name = "eplb"
    entry_function = "rebalance_experts"

    def __init__(self, options: EvalOptions | None = None, trace: traces.Trace | None = None) -> None:
        self.options = options or EvalOptions()
        self.options.check()
        if self.options.suite:  # the suite task holds one EplbTask per member (build_task)
            raise UserError("task option 'suite' scores several datasets: this command scores one at a time; "
                            "name them with --dataset A,B where it takes a list, or use `evaluate`/`run`")
        self._first_stage: EplbTask | None = None
        self._loads_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        # The harness's tensors are small: extra intra-op threads only add synchronisation (on a 2-core
        # machine a 200k-element reduction took 25 ms with 2 threads and 0.1 ms with one).
        torch.set_num_threads(1)
        self.trace = trace if trace is not None else load_task_trace(self.options)
        self.model = traces.resolve_model(self.trace, self.options.num_groups or None)
        self.partial_window = self.options.partial_window or traces.DEFAULT_PARTIAL[traces.trace_origin(self.trace)]
        windows = self.trace.windows(self.options.window, partial=self.partial_window == "score")
        if self.options.max_windows:
            windows = windows[: self.options.max_windows]
        predictive = self.options.protocol == "predictive"
        if predictive and windows.size(0) < 2:
            raise UserError(
                f"the predictive protocol needs at least 2 windows; the trace has {windows.size(0)} of "
                f"{self.options.window} steps (use a smaller --window or --protocol in-sample)"
            )
        if self.model["num_groups"] is None:
            raise UserError(
                f"{self.trace.meta.get('name', self.options.dataset)}: the trace records no expert groups for its "
                f"{self.trace.num_layers}x{self.trace.num_experts} shape; pass --groups N (1 for no group-limited "
                "routing)"
            )
        num_experts = self.trace.num_experts
        if self.options.num_replicas < num_experts:
            raise UserError(f"num_replicas ({self.options.num_replicas}) is below the number of experts "
                            f"({num_experts})")
        self.plan_windows = [w.numpy().astype(np.int64) for w in (windows[:-1] if predictive else windows)]
        self.score_windows = windows[1:] if predictive else windows
        self.num_groups = int(self.model["num_groups"])
        self._init_locality(1 if predictive else 0)
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
            isolate=not self.options.unsafe_no_isolation,
        )

    def _init_locality(self, first_window: int) -> None:
        """The sampled tokens of each scored window (evaluator.locality), or why locality cannot be measured."""
        self.route_samples = route_samples(self.trace)  # checked: a malformed array is one clear error
        self.window_tokens = None
        self.locality_unavailable = UNAVAILABLE_NO_ROUTES
        if self.route_samples is None:
            return
        self.window_tokens = assign_windows(self.route_samples, self.options.window, first_window,
                                            self.score_windows.size(0), self.trace.steps, self.trace.num_experts,
                                            self.options.locality_tokens)
        if self.window_tokens.empty:
            self.locality_unavailable = (f"none of the trace's {self.route_samples.steps.size} routed-token samples "
                                         "falls in a scored window")
        else:
            self.locality_unavailable = ""

    def seed_program(self) -> str:
        """The bundled seed balancer (the working directory's copy first, as for any relative path)."""
        return SEED_PROGRAM

    def holdout(self) -> "EplbTask":
        """The dataset's holdout split; a task scoring a whole trace has none and says so."""
        return self.with_options(split="holdout")

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
            return Result(correct=False, error=result.error or "no per-window results", **self._result_stamp())
        head = result.per_window[: max(1, self.options.first_stage_windows)]
        metrics = {k: v for k, v in result.metrics.items() if k not in ("speedup_vs_reference", "speed_octaves")}
        for key in ("balancedness_gpu", "balancedness_expert", "balancedness_node"):
            metrics[key] = float(np.mean([w[key] for w in head]))
        for key in ("cross_node", "cross_node_share", "cross_node_tokens"):
            metrics.pop(key, None)
        metrics.update(pooled(head))
        runtimes = [w["runtime_s"] for w in head]
        metrics.update(runtime_mean_s=float(np.mean(runtimes)), runtime_median_s=float(np.median(runtimes)),
                       windows=float(len(head)))
        return Result(correct=True, metrics=metrics, scores=score_all(metrics), **self._result_stamp())

    def prompt_metrics(self) -> list[str]:
        """What a model should see of a program (evolve.task.DescribedTask): no harness internals."""
        keys = ["balancedness_gpu", "balancedness_gpu_worst", "balancedness_expert", "balancedness_node",
                "runtime_median_s", "speedup_vs_reference", "speed_octaves", "reference_runtime_median_s"]
        return keys + ([] if self.locality_unavailable else ["cross_node"])

    def mutation_catalogue(self) -> dict[str, list]:
        """Alternative implementations of the seed's EVOLVE blocks, for the offline mutator."""
        from evaluator.mutations import CATALOGUE

        return CATALOGUE

    def with_options(self, **changes: Any) -> "EplbTask":
        """The same task with some options changed (for example `split="holdout"`)."""
        if changes.get("split") == "holdout" and self.trace.meta.get("split") == "all":
            raise UserError("the task scores the whole trace (split all), so nothing of it is held out; "
                            "search on --split search to keep the holdout half unseen")
        return EplbTask(dataclasses.replace(self.options, **changes))

    @property
    def args(self) -> tuple[int, int, int, int]:
        o = self.options
        return (o.num_replicas, self.num_groups, o.num_nodes, o.num_gpus)

    def stamp(self) -> dict[str, Any]:
        """What makes two scores comparable: the result stamp plus every option that alters scores."""
        options = {f.name: getattr(self.options, f.name) for f in fields(self.options) if f.name not in RUN_OPTIONS}
        return {**self._result_stamp(), "options": options}

    def _result_stamp(self) -> dict[str, Any]:
        """The stamp each `Result` carries: which evaluator, data and scorer made a number. Runtimes are the
        harness's round-trip clock, the reference's measured once per harness process (docs/sandbox.md);
        without OS isolation the version carries `+unisolated`, so such numbers are never silently compared
        with isolated ones."""
        return {
            "evaluator_version": EVALUATOR_VERSION + ("+unisolated" if self.options.unsafe_no_isolation else ""),
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
            # transfers charged against the layer-time model (evaluator.migration)
            Objective("balancedness_gpu_effective", maximise=True),
            Objective("effective_speedup", maximise=True),
            Objective("migration_bytes_per_rebalance", maximise=False),
            Objective("migration_slots_per_rebalance", maximise=False),
            # nodes a sampled token's experts span at best (evaluator.locality): fewer is better
            Objective("cross_node", maximise=False, unavailable=self._locality_problem("cross_node")),
            Objective("cross_node_share", maximise=False, unavailable=self._locality_problem("cross_node_share")),
        ]

    def _locality_problem(self, key: str) -> str:
        """Why a locality objective cannot be used on this task's trace, with the way out; "" when it can."""
        if not self.locality_unavailable:
            return ""
        name = self.trace.meta.get("name", self.options.dataset)
        return (f"{name}: {self.locality_unavailable}; use a generated dataset that samples routes, or remove "
                f"{key} from campaign.objectives")

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
        """Score a program. Every text of the result is scrubbed of the harness's secrets (defence in
        depth: the worker never holds them, but whatever a program prints or raises is untrusted)."""
        return scrub_result(self._evaluate(program_text))

    def _evaluate(self, program_text: str) -> Result:
        # checked here, where evaluation happens: a CPU-only head may drive GPU workers (e.g. on Ray)
        if self.options.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("task option 'device' is cuda but torch sees no CUDA device here; use --device cpu")
        started = time.perf_counter()
        stamp = self._result_stamp()
        # the worker is killed once the placements are checked and scored (see `Sandbox.run`)
        run = self.sandbox.run(program_text, self.plan_windows, self.args, keep_worker=True)
        try:
            result = self._score(program_text, run, stamp)
        finally:
            run.release()
        if result.correct:
            balancer_s = (sum(run.call_ns) + run.warmup_ns + run.reference_cost_ns) / 1e9
            result.metrics["harness_overhead_s"] = max(0.0, time.perf_counter() - started - balancer_s)
        return result

    def _score(self, program_text: str, run: SandboxRun, stamp: dict[str, Any]) -> Result:
        """Check the placements a run brought back, simulate them on the scoring windows and score them."""
        streams = {"stdout": run.stdout, "stderr": run.stderr}
        if not run.ok:
            return Result.failure(run.error, **stamp, **streams)
        if len(run.placements) != len(self.plan_windows):
            return Result.failure(
                f"the worker answered {len(run.placements)} of {len(self.plan_windows)} windows", **stamp, **streams
            )
        try:  # stacked once, for the contract check, the simulation, migration and locality
            plans = np.stack([p[0] for p in run.placements])
            counts = np.stack([p[2] for p in run.placements])
        except (ValueError, TypeError):  # shapes or types that differ: the per-window check names them
            plans = counts = None
        problem = validate_placements(
            run.placements, self.trace.num_layers, self.trace.num_experts, self.options.num_replicas,
            self.score_windows.numpy(), stacked=None if plans is None else (plans, counts),
        )
        if problem or plans is None:
            return Result.failure(problem or "the placements of the windows differ in shape", **stamp, **streams)
        device = torch.device(self.options.device)
        loads, identity_time = self._score_loads(device)
        sim = simulate(
            loads,
            torch.from_numpy(plans).to(device),
            torch.from_numpy(counts).to(device),
            self.options.num_gpus,
            self.options.num_nodes,
            identity_time=identity_time,
        )
        metrics = self._metrics(sim, run)
        moves = migration_cost(plans, sim, self.options.num_gpus,
                               self.options.window,
                               self.options.migration_model(str((self.trace.meta.get("model") or {}).get("name", ""))))
        metrics.update(migration_metrics(moves))
        locality = None
        if self.window_tokens is not None and not self.window_tokens.empty:
            locality = measure(plans, self.window_tokens, self.options.num_nodes, self.trace.num_experts)
            metrics.update(locality_metrics(locality))
        self._remember_speed(program_text, metrics)
        scores = score_all(metrics)
        per_window = self._per_window(sim, run)
        for i, entry in enumerate(per_window):
            entry.update(migration_per_window(moves, i))
            if locality is not None:
                entry.update(locality_per_window(locality, i))
        feedback = self._feedback(metrics, per_window, sim)
        if not run.isolated:
            metrics["unisolated"] = 1.0
        return Result(
            correct=True,
            metrics=metrics,
            scores=scores,
            per_window=per_window,
            feedback=feedback,
            **stamp,
            **streams,
        )

    def _score_loads(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The scoring windows as float64 on `device`, and their layer time without EPLB: the same for every
        candidate, so made once per device."""
        key = str(device)
        if key not in self._loads_cache:
            loads = self.score_windows.to(device).to(torch.float64)
            self._loads_cache[key] = (loads, identity_gpu_load(loads, self.options.num_gpus).amax(-1).sum(-1))
        return self._loads_cache[key]

    def _metrics(self, sim: Simulation, run: SandboxRun) -> dict[str, float]:
        calls = sorted(ns / 1e9 for ns in run.call_ns)
        median = _median(calls)
        metrics = {
            "balancedness_gpu": float(sim.balancedness_gpu.mean()),
            "balancedness_expert": float(sim.balancedness_expert.mean()),
            "balancedness_node": float(sim.balancedness_node.mean()),
            "balancedness_gpu_worst": float(sim.balancedness_gpu.min()),
            "speedup": sim.speedup,
            "runtime_median_s": median,
            "runtime_mean_s": math.fsum(calls) / len(calls),
            "runtime_p10_s": _quantile(calls, 0.1),
            "runtime_p90_s": _quantile(calls, 0.9),
            "windows": float(len(calls)),
        }
        if run.reference_ns:
            reference = _median(sorted(ns / 1e9 for ns in run.reference_ns))
            metrics["reference_runtime_median_s"] = reference
            metrics["speedup_vs_reference"] = reference / max(median, 1e-12)
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
                          "device": o.device, "threads": o.threads, "reference": self.sandbox.reference_code,
                          "isolated": not o.unsafe_no_isolation}
            measured = remembered(timing_key(program_text, conditions), measured)
        metrics["speed_octaves"] = float(measured)

    def _per_window(self, sim: Simulation, run: SandboxRun) -> list[dict[str, float]]:
        offset = 1 if self.options.protocol == "predictive" else 0
        # one conversion per figure, not one tensor index per window (the same floats)
        columns = zip(sim.balancedness_gpu.tolist(), sim.balancedness_expert.tolist(),
                      sim.balancedness_node.tolist(), sim.layer_time.tolist(), sim.identity_time.tolist())
        return [
            {
                "window": i + offset,  # an index: an int in JSON
                "balancedness_gpu": gpu,
                "balancedness_expert": expert,
                "balancedness_node": node,
                "layer_time": layer_time,
                "identity_time": identity_time,
                "runtime_s": call / 1e9,
            }
            for i, (call, (gpu, expert, node, layer_time, identity_time)) in enumerate(zip(run.call_ns, columns))
        ]

    def _feedback(self, metrics: dict[str, float], per_window: list[dict[str, float]], sim: Simulation) -> str:
        worst = min(per_window, key=lambda w: w["balancedness_gpu"])
        layer_balance = (sim.gpu_load.mean(-1).sum(0) / sim.gpu_load.amax(-1).sum(0).clamp_min(1e-12)).cpu()
        worst_layers = torch.argsort(layer_balance)[:3].tolist()
        lines = [
            f"balancedness_gpu {metrics['balancedness_gpu']:.4f} (worst window {int(worst['window'])}: "
            f"{worst['balancedness_gpu']:.4f}), balancedness_expert {metrics['balancedness_expert']:.4f}, "
            f"balancedness_node {metrics['balancedness_node']:.4f}, speed-up over no balancing "
            f"{metrics['speedup']:.3f}x",
            "layers with the worst GPU balance: "
            + ", ".join(f"{layer} ({float(layer_balance[layer]):.3f})" for layer in worst_layers),
            f"runtime {metrics['runtime_median_s'] * 1e3:.2f} ms median per call",
        ]
        if "speedup_vs_reference" in metrics:
            lines[-1] += f" ({metrics['speedup_vs_reference']:.2f}x the reference balancer's speed)"
        return "\n".join(lines)


def _quantile(ordered: list[float], q: float) -> float:
    """numpy's default (linear) percentile of an ascending list, the same arithmetic in plain floats: a
    dozen call times do not pay numpy's setup (0.2 ms for a median and two percentiles)."""
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    a, b, t = ordered[below], ordered[above], position - below
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def _median(ordered: list[float]) -> float:
    """numpy's median of an ascending list (the mean of the middle two when their number is even)."""
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def build_task(options: dict[str, Any] | None = None) -> EplbTask | SuiteTask:
    """Validate option names and values, then build the task (a suite of tasks when `suite` is set)."""
    checked = EvalOptions.from_dict(options or {})
    return build_suite(checked) if checked.suite else EplbTask(checked)


def build_suite(options: EvalOptions) -> SuiteTask:
    """One EplbTask per suite member, on the member's trace with a placement that suits its shape."""
    def member(base: EvalOptions, m: Member) -> EplbTask:
        own = dataclasses.replace(base, suite="", dataset=m.dataset, split=m.split)
        trace = load_task_trace(own)
        return EplbTask(dataclasses.replace(own, **member_placement(trace, own)), trace=trace)

    return SuiteTask(options, build_members(options, member))


# The factory campaign configs name (`task.factory`, the EPLB plugin's default): it declares its options,
# which `eplb-evolve run --print-config` lists.
make_task = TaskFactory(build_task, options=tuple(TaskOption(*row) for row in describe(EvalOptions)))

