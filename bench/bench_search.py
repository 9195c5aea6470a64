"""Evaluations and minutes a campaign needs to reach a fixed target, old defaults against new, over seeds.

Target: a program at least as balanced as `candidates/greedy_snake.py` on the holdout split (traffic the
search never saw) and no slower than it per call. Runtime is compared in one session: the program and
greedy_snake are evaluated on the holdout windows in interleaved passes, each window timed by its
fastest pass, and the program's median over windows must not exceed greedy_snake's.

Each campaign's evaluated programs are checked in the order they arrived. A program well below
greedy_snake on the search split (by more than `--search-slack`) is not checked on the holdout split,
which keeps the bench to minutes; the first program that meets the target gives the evaluations and
minutes (since the campaign's first evaluation). A campaign that never reaches it counts as needing its
whole budget (printed with `>`), which flatters the side that missed, so the ratio is conservative.

Old defaults: `make run` before the cost cap (the same objective over the whole catalogue, slow entries
included; `campaigns.OLD_DEFAULTS`). New defaults: what `make run` uses now.

Run: `.venv/bin/python bench/bench_search.py [--seeds 0 1 2] [--evaluations 150]`. Minutes are wall
clock on whatever else the machine runs: read them as a ratio measured in the same run.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import statistics
import sys

import numpy as np
from campaigns import OLD_DEFAULTS, REPO, Run, read_program, run_campaign

from evaluator.results.standing import interleaved, window_times
from evaluator.task import EplbTask, EvalOptions

PASSES = 3  # interleaved timing passes per candidate


class Target:
    """greedy_snake's holdout balance at no more than its runtime, judged in one session per candidate."""

    def __init__(self, search_slack: float) -> None:
        self.reference = (REPO / "candidates" / "greedy_snake.py").read_text()
        self.holdout = EplbTask(EvalOptions.from_dict({"split": "holdout", "speed_memo": False, "reference_calls": 0}))
        search = EplbTask(EvalOptions.from_dict({"speed_memo": False, "reference_calls": 0}))
        self.balance = self.holdout.evaluate(self.reference).metrics["balancedness_gpu"]
        self.search_floor = search.evaluate(self.reference).metrics["balancedness_gpu"] - search_slack
        self.verdicts: dict[str, bool] = {}
        self.checked = 0

    def met(self, code: str, search_balance: float) -> bool:
        if search_balance < self.search_floor:
            return False
        key = hashlib.sha256(code.encode()).hexdigest()
        if key not in self.verdicts:
            self.checked += 1
            balance = self.holdout.evaluate(code).metrics.get("balancedness_gpu", 0.0)
            ok = balance >= self.balance
            if ok:
                runs = interleaved(self.holdout, {"program": code, "greedy_snake": self.reference}, PASSES)
                ok = all(r.correct for rs in runs.values() for r in rs) and bool(
                    np.median(window_times(runs["program"])) <= np.median(window_times(runs["greedy_snake"])))
            self.verdicts[key] = ok
        return self.verdicts[key]


def reached(run: Run, target: Target) -> tuple[int, float] | None:
    """(children evaluated, minutes) when the first program meeting the target arrived; None if none did."""
    count = 0
    for step in run.steps:
        if step.kind != "evaluated":
            continue
        count += 1
        if step.correct and target.met(read_program(run, step.program_id), step.metrics.get("balancedness_gpu", 0.0)):
            return count, step.evaluated_at / 60
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--evaluations", type=int, default=150)
    parser.add_argument("--search-slack", type=float, default=0.003,
                        help="check on holdout only programs within this much of greedy_snake's search balance")
    args = parser.parse_args()

    target = Target(args.search_slack)
    print(f"target: balancedness_gpu >= {target.balance:.4f} on the holdout split (greedy_snake's) at no more than "
          f"greedy_snake's time per call, timed together ({PASSES} interleaved passes, fastest pass per window)",
          flush=True)
    rows = []
    for seed in args.seeds:
        row = {}
        for name, overrides in (("old", OLD_DEFAULTS), ("new", {})):
            run = run_campaign(seed, args.evaluations, overrides)
            hit = reached(run, target)
            row[name] = hit or (args.evaluations, run.seconds / 60)
            row[name + "_hit"] = hit is not None
            mark = "" if hit else ">"
            print(f"  seed {seed} {name}: {mark}{row[name][0]} evaluations, {mark}{row[name][1]:.2f} min "
                  f"({len(run.evaluated)} children in {run.seconds / 60:.1f} min; {target.checked} programs checked "
                  "on holdout so far)", flush=True)
        rows.append(row)
    for i, label in ((0, "evaluations"), (1, "minutes")):
        old = [r["old"][i] for r in rows]
        new = [r["new"][i] for r in rows]
        ratio = math.exp(statistics.mean(math.log(max(o, 1e-9) / max(n, 1e-9)) for o, n in zip(old, new)))
        print(f"{label}: old defaults median {statistics.median(old):.2f}, new defaults median "
              f"{statistics.median(new):.2f}; old / new = {ratio:.2f}x (geometric mean over {len(rows)} seeds)")
    print(f"reached: old {sum(r['old_hit'] for r in rows)} of {len(rows)} seeds, new {sum(r['new_hit'] for r in rows)} "
          f"of {len(rows)} (a miss counts as the whole budget)")


if __name__ == "__main__":
    sys.exit(main())
