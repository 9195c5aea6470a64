"""`eplb-evolve evaluate PROGRAM.py`: score one balancer and print a table or one JSON object."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from evaluator import presets
from evaluator.locality import UNAVAILABLE_NO_ROUTES
from evaluator.scoring import SCORERS, get_scorer
from evaluator.suite import AGGREGATES, SuiteTask
from evaluator.task import PROTOCOLS, EplbTask, EvalOptions, build_suite
from evaluator.traces.shape import describe
from evolve.errors import UserError
from evolve.loading import read_text_file
from evolve.task import Result

# command-line flag -> EvalOptions field; defaults stay in EvalOptions
OPTION_FLAGS = {
    "dataset": "dataset",
    "split": "split",
    "protocol": "protocol",
    "window": "window",
    "partial_window": "partial_window",
    "max_windows": "max_windows",
    "scorer": "scorer",
    "device": "device",
    "replicas": "num_replicas",
    "groups": "num_groups",
    "nodes": "num_nodes",
    "gpus": "num_gpus",
    "timeout": "timeout_s",
    "unsafe_no_isolation": "unsafe_no_isolation",
    "expert_params": "migration_params_per_expert",
    "bytes_per_param": "migration_bytes_per_param",
    "migration_bandwidth": "migration_bandwidth_gbs",
    "gpu_tflops": "migration_gpu_tflops",
    "rebalance_interval": "migration_interval_steps",
    "suite": "suite",
    "suite_aggregate": "suite_aggregate",
}


def add_task_arguments(parser: argparse.ArgumentParser, lists: bool = False, split_default: str = "") -> None:
    """Flags shared by every command that builds an EPLB task.

    With `lists`, --dataset and --split take comma-separated lists (parsing is the caller's)."""
    d = EvalOptions()
    several = ", comma-separated" if lists else ""
    parser.add_argument("--dataset",
                        help=f"dataset name{'s' if lists else ''} or trace file{several} (default {d.dataset})")
    parser.add_argument("--split",
                        help=f"dataset split{several} (default "
                             f"{split_default or 'search for a bundled dataset, all for an imported trace or file'})")
    parser.add_argument("--protocol", choices=PROTOCOLS, help=f"planning/scoring protocol (default {d.protocol})")
    parser.add_argument("--window", type=int, help=f"steps per window (default {d.window})")
    parser.add_argument("--partial-window", choices=["score", "drop"],
                        help="a trailing window shorter than --window: score it (default for imported traces and "
                             "files, as the published evaluators do) or drop it (default for bundled datasets)")
    parser.add_argument("--max-windows", type=int, help="use only the first N windows (default: all)")
    parser.add_argument("--scorer", choices=list(SCORERS), help=f"score to report and rank by (default {d.scorer})")
    parser.add_argument("--device", help=f"cpu or cuda (default {d.device})")
    parser.add_argument("--replicas", type=int, help=f"physical slots R (default {d.num_replicas})")
    parser.add_argument("--groups", type=int, help="expert groups (default: those recorded with the trace; "
                        "required when it records none)")
    parser.add_argument("--nodes", type=int, help=f"nodes (default {d.num_nodes})")
    parser.add_argument("--gpus", type=int, help=f"GPUs (default {d.num_gpus})")
    parser.add_argument("--timeout", type=float, help=f"seconds per evaluation (default {d.timeout_s:g})")
    parser.add_argument("--unsafe-no-isolation", action="store_const", const=True,
                        help="run candidate programs without OS isolation (no bubblewrap, no namespaces): only for "
                             "trusted programs on machines without user namespaces; results are stamped unisolated")
    if not lists:  # commands taking lists compare datasets side by side instead
        parser.add_argument("--suite", metavar="NAME:SPLIT,...",
                            help="score on several datasets at once (replaces --dataset/--split), e.g. "
                                 "deepseek-v3:search,qwen3-30b-a3b:search")
        parser.add_argument("--suite-aggregate", choices=AGGREGATES,
                            help=f"a suite's score: the mean or worst of its members' (default {d.suite_aggregate})")
    cost = parser.add_argument_group("migration cost (reported beside balancedness; see docs/benchmark-realism.md)")
    cost.add_argument("--expert-params", type=float, metavar="N",
                      help="parameters per routed expert per layer (default: from the model shape; DeepSeek-V3 3 x "
                           "7168 x 2048)")
    cost.add_argument("--bytes-per-param", type=float, metavar="B",
                      help="default: the model's usual weights (1 for DeepSeek-V3's FP8, else 2 for BF16)")
    cost.add_argument("--migration-bandwidth", type=float, metavar="GBS",
                      help=f"GB/s into each GPU (default {d.migration_bandwidth_gbs:g})")
    cost.add_argument("--gpu-tflops", type=float, metavar="T",
                      help=f"effective TFLOP/s of the expert GEMMs (default {d.migration_gpu_tflops:g})")
    cost.add_argument("--rebalance-interval", type=int, metavar="STEPS",
                      help="steps a plan is kept, its transfer spread over them (default: every scored window; "
                           "vLLM's default is 3000)")


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The EvalOptions fields the user set on the command line, over those of `--preset` if given."""
    given = {field: getattr(args, flag)
             for flag, field in OPTION_FLAGS.items() if getattr(args, flag, None) is not None}
    return presets.with_preset(getattr(args, "preset", None), given)


def task_settings(task: EplbTask, preset: str | None = None) -> dict[str, Any]:
    """Every setting a score depends on, as used (defaults resolved), and where the group count came from."""
    o, trace = task.options, task.trace
    steps_scored = task.score_windows.size(0)
    partial = trace.steps % o.window
    settings: dict[str, Any] = {
        "preset": preset or "none",
        "dataset": str(trace.meta.get("name", o.dataset)),
        "split": str(trace.meta.get("split", o.split or "all")),
        "steps": trace.steps,
        "shape": describe(task.model),
        "layers": trace.num_layers,
        "experts": trace.num_experts,
        "top_k": task.model.get("top_k"),
        "num_groups": task.num_groups,
        "groups_from": "--groups" if o.num_groups else str(trace.meta.get("groups_from", "")),
        "num_replicas": o.num_replicas,
        "num_nodes": o.num_nodes,
        "num_gpus": o.num_gpus,
        "window": o.window,
        "partial_window": task.partial_window,
        "trailing_partial_steps": partial,
        "protocol": o.protocol,
        "scored_windows": steps_scored,
        "max_windows": o.max_windows,
        "scorer": o.scorer,
        "scorer_formula": get_scorer(o.scorer).formula,
        "timer": "each call's round trip (window in, placement out), on the harness's clock; docs/sandbox.md",
        "locality": (f"unavailable: {task.locality_unavailable}" if task.locality_unavailable else
                     f"measured on {task.window_tokens.plan.size} of the {task.window_tokens.sampled} routed-token "
                     f"samples in the scored windows (at most {o.locality_tokens or 'all'} per window; "
                     "docs/locality.md)"),
    }
    if preset:
        p = presets.get_preset(preset)
        if p.options.get("num_groups") == o.num_groups:
            settings["groups_from"] = f"the {preset} preset (the published evaluator's constant)"
        settings["overrides"] = sorted(k for k, v in p.options.items() if getattr(o, k) != v)
        if p.shape and p.shape != (trace.num_layers, trace.num_experts):
            settings["note"] = (f"the {preset} preset's configuration is for {p.shape[0]}x{p.shape[1]} traces; "
                                f"this one is {trace.num_layers}x{trace.num_experts}")
    return settings


def format_settings(settings: dict[str, Any]) -> list[str]:
    """The settings as table lines."""
    s = settings
    partial = (f"{s['partial_window']} (the last {s['trailing_partial_steps']} steps)" if s["trailing_partial_steps"]
               else f"{s['partial_window']} (none: the steps fill whole windows)")
    lines = [
        f"preset    {s['preset']}" + (f" (overridden: {', '.join(s['overrides'])})" if s.get("overrides") else ""),
        f"shape     {s['layers']} layers x {s['experts']} experts, "
        f"top-{s['top_k'] if s['top_k'] is not None else '?'}, "
        f"{s['num_groups']} expert groups (from {s['groups_from']})",
        f"placement R={s['num_replicas']} slots, {s['num_nodes']} nodes, {s['num_gpus']} GPUs",
        f"windows   {s['window']} steps over {s['steps']} steps; trailing partial window: {partial}; protocol "
        f"{s['protocol']}; {s['scored_windows']} scored windows"
        + (f" (first {s['max_windows']} windows only)" if s["max_windows"] else ""),
        f"scorer    {s['scorer']}: {s['scorer_formula']}",
        f"timer     {s['timer']}",
    ]
    if s.get("note"):
        lines.append(f"note      {s['note']}")
    return lines


def program_path(name: str) -> Path:
    """A program file, or a candidate's name: `./candidates/NAME.py`, else the copy bundled with the install."""
    from evaluator.paths import REPO_ROOT

    given = Path(name)
    if given.is_file():
        return given
    if given.suffix != ".py" and given.name == name:
        for folder in (Path("candidates"), REPO_ROOT / "candidates"):
            if (folder / f"{name}.py").is_file():
                return folder / f"{name}.py"
    known = sorted({p.stem for folder in (Path("candidates"), REPO_ROOT / "candidates") for p in folder.glob("*.py")})
    raise UserError(f"{name}: no such program file or candidate; give a .py file or one of: "
                    f"{', '.join(known) or 'none'}")


def read_program(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such program file")
    return read_text_file(p, "program")


def result_json(result: Result, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "settings": settings or {},
        "correct": result.correct,
        "error": result.error,
        "metrics": result.metrics,
        "scores": result.scores,
        "per_window": result.per_window,
        "dataset": result.dataset,
        "evaluator_version": result.evaluator_version,
        "scorer": result.scorer,
        "feedback": result.feedback,
    }


def locality_row(metrics: dict[str, Any], settings: dict[str, Any] | None) -> tuple[str, str]:
    """The table's locality line: the best-case nodes per token and layer, or why there is none."""
    if "cross_node" not in metrics:
        reason = str((settings or {}).get("locality", "")).removeprefix("unavailable: ") or UNAVAILABLE_NO_ROUTES
        return "locality", f"unavailable for this trace: {reason}"
    return "locality", (f"cross_node {metrics['cross_node']:.3f} nodes per token and layer at best "
                        f"({metrics['cross_node_share']:.1%} span more than one node; "
                        f"{int(metrics['cross_node_tokens'])} sampled tokens)")


def format_table(program: str, result: Result, settings: dict[str, Any] | None = None) -> str:
    d = result.dataset
    lines = [
        f"program   {program}",
        f"dataset   {d.get('name')} ({d.get('split')}, sha256 {d.get('sha256', '')[:12]}), evaluator "
        f"{result.evaluator_version}",
    ]
    lines += format_settings(settings) if settings else []
    if not result.correct:
        lines.append(f"INCORRECT {result.error}")
        return "\n".join(lines)
    m = result.metrics
    rows = [
        ("balancedness_gpu", f"{m['balancedness_gpu']:.4f}"),
        ("balancedness_expert", f"{m['balancedness_expert']:.4f}"),
        ("balancedness_node", f"{m['balancedness_node']:.4f}"),
        ("speed-up vs no EPLB", f"{m['speedup']:.3f}x"),
        ("migration", f"{m['migration_slots_per_rebalance']:.0f} slots changed per rebalance "
                      f"({m['migration_slot_share']:.1%}), {m['migration_bytes_per_rebalance'] / 1e9:.2f} GB moved, "
                      f"busiest GPU {m['migration_time_s'] * 1e3:.0f} ms"),
        ("with transfers", f"balancedness_gpu {m['balancedness_gpu_effective']:.4f}, speed-up "
                           f"{m['effective_speedup']:.3f}x ({m['migration_overhead']:.1%} of MoE time)"),
        locality_row(m, settings),
        ("runtime per call", f"{m['runtime_median_s'] * 1e3:.2f} ms median "
                             f"(p10 {m['runtime_p10_s'] * 1e3:.2f}, p90 {m['runtime_p90_s'] * 1e3:.2f})"),
    ]
    if "speedup_vs_reference" in m:
        rows.append(("vs reference", f"{m['speedup_vs_reference']:.2f}x its speed "
                                     f"({m['reference_runtime_median_s'] * 1e3:.2f} ms)"))
    rows += [(f"score {name}" + (" *" if name == result.scorer else ""), f"{value:.4f}")
             for name, value in result.scores.items()]
    width = max(len(k) for k, _ in rows)
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append(f"({int(m['windows'])} scored windows; * = the chosen scorer; runtime covers the balancer call only)")
    return "\n".join(lines)


def run_evaluate(args: argparse.Namespace) -> int:
    path = program_path(args.program)
    code = read_program(str(path))
    options = EvalOptions.from_dict(task_options(args))
    if options.suite:
        return evaluate_suite(args, path, code, build_suite(options))
    task = EplbTask(options)  # loads (or generates, with a progress bar) the trace; a bad option fails here
    data = task.stamp()["dataset"]
    print(f"evaluate: {path.resolve()} on {data['name']} ({data['split']} split, {len(task.plan_windows)} windows "
          f"of {options.window} steps); starting the sandbox and timing the reference takes a few seconds",
          file=sys.stderr, flush=True)
    settings = task_settings(task, args.preset)
    result = task.evaluate(code)
    if args.json:
        print(json.dumps(result_json(result, settings), indent=2))
    else:
        print(format_table(args.program, result, settings))
    return 0 if result.correct else 1


def evaluate_suite(args: argparse.Namespace, path: Path, code: str, suite: SuiteTask) -> int:
    """Each member's table (or JSON), then the aggregate over the members."""
    print(f"evaluate: {path.resolve()} on a suite of {len(suite.members)} ({', '.join(suite.labels)}); starting one "
          "sandbox per member and timing the reference takes a few seconds each", file=sys.stderr, flush=True)
    settings = [task_settings(m, args.preset) for m in suite.members]
    results = suite.evaluate_members(code)
    total = suite.combine(results)
    if args.json:
        members = [{"member": label, **result_json(r, s)} for label, r, s in zip(suite.labels, results, settings)]
        print(json.dumps({**result_json(total), "suite": {"aggregate": suite.how, "members": members}}, indent=2))
    else:
        for label, r, s in zip(suite.labels, results, settings):
            print(f"== suite member {label}\n{format_table(args.program, r, s)}\n")
        print(format_suite(suite, results, total))
    return 0 if total.correct else 1


def format_suite(suite: SuiteTask, results: list[Result], total: Result) -> str:
    """One line per member and the aggregate, under the chosen scorer."""
    scorer = suite.options.scorer
    width = max(len(label) for label in suite.labels)
    lines = [f"suite ({suite.how} of {len(results)} members, scorer {scorer})"]
    for label, r in zip(suite.labels, results):
        value = f"{r.scores[scorer]:.4f}  balancedness_gpu {r.metrics['balancedness_gpu']:.4f}" if r.correct else (
            f"INCORRECT {r.error}")
        lines.append(f"  {label.ljust(width)}  {value}")
    lines.append(f"  {'aggregate'.ljust(width)}  " + (f"{total.scores[scorer]:.4f} ({suite.how})" if total.correct
                                                     else f"INCORRECT {total.error}"))
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="score one balancer program")
    parser.add_argument("program", metavar="PROGRAM",
                        help="a .py file defining rebalance_experts, or a candidate's name (e.g. seed)")
    add_task_arguments(parser)
    parser.add_argument("--preset", choices=list(presets.PRESETS),
                        help="reproduce a published evaluator's protocol: "
                             + "; ".join(f"{p.name} = {p.description}" for p in presets.PRESETS.values())
                             + " (flags given beside it win)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(func=run_evaluate)
