"""Evaluations and minutes a campaign needs to reach a fixed target, old defaults against new, over seeds.

Targets: a program at least as balanced as `candidates/greedy_snake.py` (balancedness_gpu on the search
split) and at least as fast (a speed octave against the reference no lower than greedy_snake's, read
from this machine's speed memo, so both sides are judged by the same measurement rules); and a harder
one, as balanced as the best shipped candidate (`--balance-of`, default hybrid_tail_swap) at that speed.

Old defaults: scorer `native` (balance only), no structural novelty, no `speedup` operator. New defaults: what
`make run` uses now. Each seed runs both for at most `--evaluations` children; a campaign that never
reaches the target counts as needing the whole budget (printed with `>`), which flatters the side that
missed it, so the ratio is conservative for the side that reaches it.

Run: `.venv/bin/python bench/bench_search.py [--seeds 0 1 2] [--evaluations 150]`. Minutes are wall
clock on a shared machine: read them as a ratio measured in the same run.
"""
from __future__ import annotations

import argparse
import math
import statistics

from campaigns import OLD_DEFAULTS, Run, run_campaign

from evaluator.candidates_view import target_of
from evaluator.scoring import speed_octaves
from evaluator.task import EplbTask, EvalOptions


def reached(run: Run, balance: float, octaves: int) -> tuple[int, float] | None:
    """(children evaluated, minutes) when the first program meeting the target arrived; None if none did."""
    count = 0
    for step in run.steps:
        if step.kind != "evaluated":
            continue
        count += 1
        m = step.metrics
        if step.correct and m.get("balancedness_gpu", 0.0) >= balance and speed_octaves(m) >= octaves:
            return count, step.evaluated_at / 60
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--evaluations", type=int, default=150)
    parser.add_argument("--balance-of", default="hybrid_tail_swap",
                        help="candidate whose balance the harder target asks for")
    args = parser.parse_args()

    task = EplbTask(EvalOptions())
    snake_balance, octaves = target_of(task, "greedy_snake")
    best_balance, _ = target_of(task, args.balance_of)
    targets = {f"greedy_snake's balance and speed (>= {snake_balance:.4f}, octave >= {octaves})": snake_balance,
               f"{args.balance_of}'s balance at greedy_snake's speed (>= {best_balance:.4f}, "
               f"octave >= {octaves})": best_balance}
    print("targets, on the search split: " + "; ".join(targets))
    rows: dict[str, list[dict]] = {t: [] for t in targets}
    for seed in args.seeds:
        runs = {name: run_campaign(seed, args.evaluations, overrides)
                for name, overrides in (("old", OLD_DEFAULTS), ("new", {}))}
        for target, balance in targets.items():
            row = {}
            for name, run in runs.items():
                hit = reached(run, balance, octaves)
                row[name] = hit or (args.evaluations, run.seconds / 60)
                row[name + "_hit"] = hit is not None
                mark = "" if hit else ">"
                print(f"  seed {seed} {name} [{target.split(' (')[0]}]: {mark}{row[name][0]} evaluations, "
                      f"{mark}{row[name][1]:.2f} min ({len(run.evaluated)} children in {run.seconds / 60:.1f} min)",
                      flush=True)
            rows[target].append(row)
    for target, table in rows.items():
        print(f"target: {target}")
        for i, label in ((0, "evaluations"), (1, "minutes")):
            old = [r["old"][i] for r in table]
            new = [r["new"][i] for r in table]
            ratio = math.exp(statistics.mean(math.log(o / max(n, 1e-9)) for o, n in zip(old, new)))
            print(f"  {label}: old defaults median {statistics.median(old):.2f}, new defaults median "
                  f"{statistics.median(new):.2f}; old / new = {ratio:.2f}x (geometric mean over {len(table)} seeds)")
        print(f"  reached: old {sum(r['old_hit'] for r in table)} of {len(table)} seeds, "
              f"new {sum(r['new_hit'] for r in table)} of {len(table)} (a miss counts as the whole budget)")


if __name__ == "__main__":
    main()
