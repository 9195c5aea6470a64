"""`eplb-evolve evaluate PROGRAM.py`: score one balancer and print a table or one JSON object."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from evaluator.scoring import SCORERS
from evaluator.task import PROTOCOLS, EplbTask, EvalOptions
from evolve.errors import UserError
from evolve.task import Result

# command-line flag -> EvalOptions field; defaults stay in EvalOptions
OPTION_FLAGS = {
    "dataset": "dataset",
    "split": "split",
    "protocol": "protocol",
    "window": "window",
    "max_windows": "max_windows",
    "scorer": "scorer",
    "device": "device",
    "replicas": "num_replicas",
    "groups": "num_groups",
    "nodes": "num_nodes",
    "gpus": "num_gpus",
    "timeout": "timeout_s",
    "expert_params": "migration_params_per_expert",
    "bytes_per_param": "migration_bytes_per_param",
    "migration_bandwidth": "migration_bandwidth_gbs",
    "gpu_tflops": "migration_gpu_tflops",
    "rebalance_interval": "migration_interval_steps",
}


def add_task_arguments(parser: argparse.ArgumentParser, lists: bool = False, split_default: str = "") -> None:
    """Flags shared by every command that builds an EPLB task.

    With `lists`, --dataset and --split take comma-separated lists (parsing is the caller's)."""
    d = EvalOptions()
    several = ", comma-separated" if lists else ""
    parser.add_argument("--dataset", help=f"dataset name{'s' if lists else ''} or trace file{several} (default {d.dataset})")
    parser.add_argument("--split", help=f"dataset split{several} (default {split_default or d.split})")
    parser.add_argument("--protocol", choices=PROTOCOLS, help=f"default {d.protocol}")
    parser.add_argument("--window", type=int, help=f"steps per window (default {d.window})")
    parser.add_argument("--max-windows", type=int, help="use only the first N windows (default: all)")
    parser.add_argument("--scorer", choices=list(SCORERS), help=f"default {d.scorer}")
    parser.add_argument("--device", help=f"cpu or cuda (default {d.device})")
    parser.add_argument("--replicas", type=int, help=f"physical slots R (default {d.num_replicas})")
    parser.add_argument("--groups", type=int, help="expert groups (default: the model's)")
    parser.add_argument("--nodes", type=int, help=f"default {d.num_nodes}")
    parser.add_argument("--gpus", type=int, help=f"default {d.num_gpus}")
    parser.add_argument("--timeout", type=float, help=f"seconds per evaluation (default {d.timeout_s:g})")
    cost = parser.add_argument_group("migration cost (reported beside balancedness; see docs/benchmark-realism.md)")
    cost.add_argument("--expert-params", type=float, metavar="N",
                      help="parameters per routed expert per layer (default: from the model shape; DeepSeek-V3 3 x 7168 x 2048)")
    cost.add_argument("--bytes-per-param", type=float, metavar="B", help="default: the model's usual weights (1 for DeepSeek-V3's FP8, else 2 for BF16)")
    cost.add_argument("--migration-bandwidth", type=float, metavar="GBS",
                      help=f"GB/s into each GPU (default {d.migration_bandwidth_gbs:g})")
    cost.add_argument("--gpu-tflops", type=float, metavar="T",
                      help=f"effective TFLOP/s of the expert GEMMs (default {d.migration_gpu_tflops:g})")
    cost.add_argument("--rebalance-interval", type=int, metavar="STEPS",
                      help="steps a plan is kept, its transfer spread over them (default: every scored window; "
                           "vLLM's default is 3000)")


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The EvalOptions fields the user set on the command line."""
    return {field: getattr(args, flag) for flag, field in OPTION_FLAGS.items() if getattr(args, flag, None) is not None}


def read_program(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such program file")
    try:
        return p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the program ({exc})") from None


def result_json(result: Result) -> dict[str, Any]:
    return {
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


def format_table(program: str, result: Result) -> str:
    d = result.dataset
    lines = [
        f"program   {program}",
        f"dataset   {d.get('name')} ({d.get('split')}, sha256 {d.get('sha256', '')[:12]}), evaluator {result.evaluator_version}",
    ]
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
        ("runtime per call", f"{m['runtime_median_s'] * 1e3:.2f} ms median "
                             f"(p10 {m['runtime_p10_s'] * 1e3:.2f}, p90 {m['runtime_p90_s'] * 1e3:.2f})"),
    ]
    if "speedup_vs_reference" in m:
        rows.append(("vs reference", f"{m['speedup_vs_reference']:.2f}x its speed "
                                     f"({m['reference_runtime_median_s'] * 1e3:.2f} ms)"))
    rows += [(f"score {name}" + (" *" if name == result.scorer else ""), f"{value:.4f}") for name, value in result.scores.items()]
    width = max(len(k) for k, _ in rows)
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append(f"({int(m['windows'])} scored windows; * = the chosen scorer; runtime covers the balancer call only)")
    return "\n".join(lines)


def run_evaluate(args: argparse.Namespace) -> int:
    code = read_program(args.program)
    task = EplbTask(EvalOptions.from_dict(task_options(args)))
    result = task.evaluate(code)
    if args.json:
        print(json.dumps(result_json(result), indent=2))
    else:
        print(format_table(args.program, result))
    return 0 if result.correct else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="score one balancer program")
    parser.add_argument("program", help="a .py file defining rebalance_experts")
    add_task_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(func=run_evaluate)
