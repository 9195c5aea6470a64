"""Candidates per hour with and without the evaluation cascade, on the same seeded campaign.

Runs the default campaign (offline mutator, deepseek-v3 search split, standard configuration) twice with
the same seed: once with `campaign.cascade = false`, once with the cascade on. Prints children evaluated
per hour of wall clock for each and the ratio, then audits every child the first stage stopped: it is
evaluated in full, and counted as wrongly stopped when its full score would have been at least its
parent's (a lost improvement) or when it is correct although the first stage called it broken.

Run: `.venv/bin/python bench/bench_cascade.py [--evaluations 80] [--seed 0]`. Timings are wall clock on
whatever else the machine is doing: compare the ratio, not the absolute rates.
"""
from __future__ import annotations

import argparse

from campaigns import run_campaign

from evaluator.task import EplbTask, EvalOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=None,
                        help="campaign.cascade_tolerance (default: the config's)")
    args = parser.parse_args()
    extra = {} if args.tolerance is None else {"campaign.cascade_tolerance": args.tolerance}

    print(f"campaign: {args.evaluations} children, seed {args.seed}, offline mutator, deepseek-v3 search", flush=True)
    off = run_campaign(args.seed, args.evaluations, {"campaign.cascade": False})
    print(f"  cascade off: {len(off.evaluated)} children in {off.seconds:.1f} s", flush=True)
    on = run_campaign(args.seed, args.evaluations, {"campaign.cascade": True, **extra})
    print(f"  cascade on:  {len(on.evaluated)} children in {on.seconds:.1f} s", flush=True)
    rate_off = 3600 * len(off.evaluated) / off.seconds
    rate_on = 3600 * len(on.evaluated) / on.seconds
    stopped = [s for s in on.evaluated if s.metrics.get("cascade_first_stage_passed") == 0.0]
    print(f"candidates per hour: {rate_off:.0f} without the cascade, {rate_on:.0f} with it: "
          f"ratio {rate_on / rate_off:.2f}x")
    print(f"stopped by the first stage: {len(stopped)} of {len(on.evaluated)} children "
          f"({sum(not s.error.startswith('stopped by') for s in stopped)} broken, "
          f"{sum(s.error.startswith('stopped by') for s in stopped)} worse than their parent)")

    task = EplbTask(EvalOptions())
    by_id = {s.program_id: s for s in on.steps if s.program_id}
    from evolve.archive import Archive

    archive = Archive(on.run_dir / "archive.sqlite")
    wrong = 0
    try:
        for s in stopped:
            full = task.evaluate(archive.program(s.program_id).code)
            parent = by_id.get(s.parent_id)
            parent_score = parent.score if parent is not None else None
            kept = full.correct and (parent_score is None or full.score >= parent_score)
            wrong += kept
            if kept:
                print(f"  wrongly stopped: {s.program_id[:12]} full {full.score:.4f} vs parent {parent_score:.4f} "
                      f"(first stage {s.metrics.get('cascade_first_stage_value', float('nan')):.4f} vs "
                      f"{s.metrics.get('cascade_parent_first_stage_value', float('nan')):.4f})")
    finally:
        archive.close()
    share = wrong / len(stopped) if stopped else 0.0
    print(f"wrongly stopped: {wrong} of {len(stopped)} stopped children ({share:.0%}) would have scored at least "
          "their parent in full")


if __name__ == "__main__":
    main()
