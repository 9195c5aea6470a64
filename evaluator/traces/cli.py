"""`eplb-evolve traces ...`: list, generate, measure, import and export expert-load traces.

Only parsing and printing live here; the work is in `registry`, `generator`, `stats` and
`formats`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evaluator.traces import registry
from evaluator.traces.trace import TraceError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("traces", help="expert-load traces: list, generate, stats, import, export")
    parser.set_defaults(func=lambda args: _help(parser))
    sub = parser.add_subparsers(dest="traces_command", metavar="ACTION")

    p = sub.add_parser("list", help="bundled and imported datasets")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("generate", help="generate a bundled dataset into the cache (once per machine)")
    p.add_argument("name", help="dataset name, e.g. deepseek-v3")
    p.add_argument("--split", default=None, help="one split (default: every split)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--force", action="store_true", help="regenerate even when cached")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("stats", help="calibration statistics beside the published figures")
    p.add_argument("name", help="dataset name, NAME:split, or a trace file")
    p.add_argument("--split", default=None, help="dataset split (default: search; all for an imported dataset)")
    p.add_argument("--window", type=int, default=None, help="steps per window (default 100)")
    p.add_argument("--replicas", type=int, default=None,
                   help="physical slots R (default: the layout for the trace's model)")
    p.add_argument("--groups", type=int, default=None, help="expert groups (default: the model's)")
    p.add_argument("--nodes", type=int, default=None, help="nodes (default: the layout for the trace's model)")
    p.add_argument("--gpus", type=int, default=None, help="GPUs (default: the layout for the trace's model)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("similarity", help="how alike the splits' hot experts are (is a holdout a generalisation test?)")
    p.add_argument("name", help="bundled dataset name")
    p.add_argument("--splits", default=None,
                   help="comma-separated splits (default: every split); the first is the reference")
    p.set_defaults(func=cmd_similarity)

    p = sub.add_parser("import", help="import a trace file as a named user dataset")
    p.add_argument("file", help="trace file (or TensorRT-LLM statistics folder)")
    p.add_argument("--format", default=None, help="adrs-json, sglang, trtllm, npz or csv (default: from the name)")
    p.add_argument("--name", required=True, help="dataset name to store it under")
    p.add_argument("--groups", type=int, default=None, metavar="N",
                   help="expert groups of the model (default: what the file states, else 8 for the published "
                        "58x256 shape; required otherwise, 1 for a model without group-limited routing)")
    p.add_argument("--force", action="store_true", help="replace an existing dataset of that name")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="write a dataset in another tool's format")
    p.add_argument("name", help="dataset name, NAME:split, or a trace file")
    p.add_argument("out", help="output file")
    p.add_argument("--format", default="adrs-json", help="adrs-json (default), npz or csv")
    p.add_argument("--split", default=None, help="dataset split (default: search; all for an imported dataset)")
    p.set_defaults(func=cmd_export)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def cmd_list(args: argparse.Namespace) -> int:
    rows = registry.list_datasets()
    if not rows:
        print("no datasets (no manifests in datasets/ and nothing imported)")
        return 0
    print(f"{'name':<20} {'kind':<9} {'model':<17} {'shape':<13} {'splits (default first, cached*)':<52} "
          f"{'partial window':<15} description")
    for d in rows:
        splits = ",".join(s + ("*" if s in d.cached and d.kind == "bundled" else "") for s in d.splits)
        print(f"{d.name:<20} {d.kind:<9} {d.model or '-':<17} {d.shape or '?':<13} {splits:<52} "
              f"{d.partial_window:<15} {d.description}")
    print("shape: layers x experts, g = expert groups, k = experts per token ('?' = not recorded); "
          "partial window: whether a trailing window shorter than the window size is scored by default")
    print(f"cache: {registry.cache_dir()}")

    print_split_notes()
    return 0


def print_split_notes() -> None:
    """What each bundled split is: its router model, traffic and length (which splits test generalisation)."""
    print("\nsplits of the bundled datasets (search: tune on it; holdout: same router model, new traffic; "
          "holdout-model: another router model of the same shape, other hot experts; holdout-long: same model, "
          "new traffic, twice as long; serving: same model, serving-shaped batches: prefill chunks between "
          "decode steps, runs of steps dominated by one long request):")
    for m in registry.manifests().values():
        for split in m.splits:
            print(f"  {m.name + ':' + split:<34} {m.split_summary(split)}")


def cmd_generate(args: argparse.Namespace) -> int:
    known = registry.manifests()
    if args.name not in known:
        raise TraceError(f"unknown bundled dataset '{args.name}'; known: {', '.join(known) or 'none'}")
    manifest = known[args.name]
    splits = [args.split] if args.split else list(manifest.splits)
    for split in splits:
        if split not in manifest.splits:
            raise TraceError(f"dataset '{manifest.name}' has no split '{split}'; splits: {', '.join(manifest.splits)}")
        path = manifest.cache_path(split)
        if args.force and path.exists():
            path.unlink()
        trace = registry.dataset_trace(manifest, split, progress=True, device=args.device)
        print(f"{manifest.name}:{split}  {trace.steps}x{trace.num_layers}x{trace.num_experts}  sha256 {trace.sha256}  "
              f"{path}")
    return 0


def cmd_similarity(args: argparse.Namespace) -> int:
    from evaluator.traces.similarity import HOT_FRACTION, hot_overlap, share_correlation

    known = registry.manifests()
    if args.name not in known:
        raise TraceError(f"unknown bundled dataset '{args.name}'; known: {', '.join(known) or 'none'}")
    manifest = known[args.name]
    splits = [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else list(manifest.splits)
    loaded = {split: registry.load_trace(args.name, split) for split in splits}
    reference = splits[0]
    print(f"{args.name}: expert-share correlation and hot-expert overlap (top {HOT_FRACTION:.0%} per layer) "
          f"against '{reference}'")
    for split in splits[1:]:
        corr = share_correlation(loaded[reference], loaded[split])
        overlap = hot_overlap(loaded[reference], loaded[split])
        note = manifest.split_summary(split) if split in manifest.splits else ""
        print(f"  {split:<16} correlation {corr:+.3f}  hot overlap {overlap:.0%}  ({note})")
    print(f"  (unrelated routers: correlation about 0, hot overlap about {HOT_FRACTION:.0%})")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from evaluator.traces.stats import StatsConfig, compute_stats, format_serving, format_stats, serving_stats

    trace = registry.load_trace(args.name, args.split)
    config = StatsConfig.for_trace(trace)
    changes = {
        k: v
        for k, v in dict(
            num_replicas=args.replicas, num_groups=args.groups, num_nodes=args.nodes, num_gpus=args.gpus,
            window=args.window
        ).items()
        if v is not None
    }
    config = replace(config, **changes)
    stats = compute_stats(trace, config)
    serving = serving_stats(trace)
    label = f"{trace.meta.get('name')}:{trace.meta.get('split')}  sha256 {trace.sha256[:16]}  {trace.steps} steps"
    if args.json:
        print(json.dumps({"dataset": label, "config": config.__dict__, "stats": stats.as_dict(),
                          "serving": serving.as_dict()}, indent=2))
    else:
        print(label)
        standard = trace.num_experts == 256 and config == StatsConfig(num_groups=config.num_groups)
        print(format_stats(stats, config, published=standard))
        print()
        print(format_serving(serving))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from evaluator.traces.formats import read_trace
    from evaluator.traces.shape import describe

    trace = read_trace(args.file, args.format)
    path = registry.save_user_dataset(trace, args.name, force=args.force, groups=args.groups)
    model = trace.meta["model"]
    print(f"imported {args.file} as '{args.name}': {trace.steps} steps, shape {describe(model)} "
          f"(groups from {trace.meta['groups_from']}), sha256 {trace.sha256}  {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from evaluator.traces.formats import write_trace

    trace = registry.load_trace(args.name, args.split)
    out = write_trace(trace, Path(args.out), args.format)
    print(f"wrote {trace.meta.get('name')}:{trace.meta.get('split')} ({trace.steps} steps) as {args.format} to {out}",
          file=sys.stderr)
    return 0
