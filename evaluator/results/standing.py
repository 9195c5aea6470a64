"""Where a campaign's best program stands against the seed and the shipped candidates on unseen splits.

For each split beside the search split (the dataset's holdout traffic, another router model's traffic)
the seed, the best program and every shipped candidate are evaluated one after another in the same warm
sandbox, `repeats` interleaved passes, so their runtimes compare with each other. From that:

* balance: balancedness_gpu, mean over the scored windows (it does not depend on timing);
* runtime: the median time per call over the windows, each window's time taken as the fastest of its
  passes (other work on the machine only ever slows a call down, so the fastest pass is the least
  disturbed one), and its ratio to the reference balancer's time measured in the same passes;
* the fastest shipped candidate (lowest time per call) and the most balanced one (highest balance),
  chosen on that split;
* the paired interval of best minus the most balanced shipped candidate on balance (circular block
  bootstrap over consecutive windows, `evaluator.results.compare.pair_stats`) and the per-window time
  ratio of the best to the fastest shipped candidate, with its interval;
* a verdict: the best is no slower than the fastest (time ratio at most 1) and not significantly less
  balanced than the most balanced (the interval of the difference reaches 0 or above).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from evaluator.results.compare import PairStats, finite_json, pair_stats
from evaluator.task import EplbTask
from evolve.errors import UserError
from evolve.task import Result

REPEATS = 5  # interleaved passes: timing on a shared machine moves by several percent between identical runs
RESAMPLES = 5000
SPLITS_BESIDE = ("holdout", "holdout-model")  # new traffic of the same router model; another router model's


@dataclass
class Entry:
    """One program on one split."""

    name: str
    role: str  # best, seed, reference, shipped
    correct: bool
    error: str = ""
    balance: float = float("nan")
    ms_per_call: float = float("nan")
    x_reference: float = float("nan")  # reference time / this program's time: above 1 is faster


@dataclass
class SplitStanding:
    """The best program against the seed and the shipped candidates on one split."""

    label: str  # e.g. "deepseek-v3 (holdout split)"
    split: str
    windows: int
    entries: list[Entry]
    fastest: str = ""  # the fastest shipped candidate
    most_balanced: str = ""  # the most balanced shipped candidate
    balance_difference: dict[str, float] = field(default_factory=dict)  # best - most balanced: value, low, high
    time_ratio: dict[str, float] = field(default_factory=dict)  # best / fastest per call: value, low, high
    no_slower: bool = False
    not_less_balanced: bool = False
    problem: str = ""  # why no verdict could be reached (the best incorrect here, no shipped candidate)

    @property
    def verdict(self) -> bool:
        return not self.problem and self.no_slower and self.not_less_balanced

    def entry(self, name: str) -> Entry | None:
        return next((e for e in self.entries if e.name == name), None)

    def verdict_line(self) -> str:
        if self.problem:
            return f"no verdict on {self.split}: {self.problem}"
        return (f"best is no slower than {self.fastest} and not significantly less balanced than "
                f"{self.most_balanced} on {self.split}: {'yes' if self.verdict else 'no'}")


@dataclass
class Standing:
    """Every split's standing, and the programs' results (for the report's per-window figure)."""

    repeats: int
    splits: list[SplitStanding]
    results: dict[str, dict[str, Result]]  # split label -> program name -> one of its evaluations

    def to_data(self) -> dict[str, Any]:
        """Plain numbers and names for summary.json (NaN written as None)."""
        return finite_json({"repeats": self.repeats,
                        "splits": [{**asdict(s), "verdict": s.verdict, "verdict_line": s.verdict_line()}
                                   for s in self.splits]})

    def rows(self) -> list[tuple[str, str]]:
        """Summary rows (label, text) for the report page and the printed summary."""
        out: list[tuple[str, str]] = []
        if not self.splits:  # a trace file, or a dataset without other splits: nothing to stand on
            return out
        for s in self.splits:
            for e in s.entries:
                if e.role == "reference":
                    continue
                out.append((f"{s.split}: {_label(e, s)}", _entry_text(e)))
            if not s.problem:
                d, r = s.balance_difference, s.time_ratio
                out.append((f"{s.split}: best - {s.most_balanced}",
                            f"balancedness_gpu {d['value']:+.4f}, 95% interval [{d['low']:+.4f}, {d['high']:+.4f}] "
                            f"(paired block bootstrap over {s.windows} windows); time per call {r['value']:.2f}x "
                            f"{s.fastest}'s [{r['low']:.2f}, {r['high']:.2f}]"))
            out.append((f"{s.split}: verdict", s.verdict_line()))
        out.append(("timing of these rows", f"every program above evaluated {self.repeats} times, interleaved, in "
                                            "one warm sandbox per split; a window's time is its fastest pass, ms "
                                            "per call the median over windows"))
        return out


def _label(e: Entry, s: SplitStanding) -> str:
    roles = []
    if e.name == s.most_balanced:
        roles.append("most balanced shipped")
    if e.name == s.fastest:
        roles.append("fastest shipped")
    return e.name + (f" ({', '.join(roles)})" if roles else "")


def _entry_text(e: Entry) -> str:
    if not e.correct:
        return f"incorrect: {e.error}"
    return (f"balancedness_gpu {e.balance:.4f}; {e.ms_per_call:.2f} ms per call, {e.x_reference:.2f}x the "
            "reference's speed")


# ---- measuring ---------------------------------------------------------------------------------------------
def interleaved(task: EplbTask, programs: dict[str, str], repeats: int,
                say: Callable[[str], None] = lambda _: None) -> dict[str, list[Result]]:
    """Every program evaluated `repeats` times, one pass after another, each pass in a rotated order so no
    program always runs right after the same one. One untimed evaluation first warms the sandbox."""
    names = list(programs)
    if not names:
        return {}
    task.evaluate(programs[names[0]])
    runs: dict[str, list[Result]] = {n: [] for n in names}
    for r in range(repeats):
        say(f"pass {r + 1}/{repeats} over {len(names)} programs")
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs[name].append(task.evaluate(programs[name]))
    return runs


def window_times(results: list[Result]) -> np.ndarray:
    """Per scored window, its fastest call time over the repeats (seconds)."""
    return np.min(np.array([[w["runtime_s"] for w in r.per_window] for r in results]), axis=0)


def window_balance(result: Result) -> np.ndarray:
    return np.array([w["balancedness_gpu"] for w in result.per_window], dtype=np.float64)


def split_standing(label: str, split: str, runs: dict[str, list[Result]], roles: dict[str, str],
                   reference: str, seed: int = 0) -> SplitStanding:
    """The standing on one split from interleaved evaluations; `roles` maps each name to best, seed, shipped
    or reference, and `reference` names the program whose time the speed ratios divide."""
    ok = {n: rs for n, rs in runs.items() if all(r.correct for r in rs)}
    times = {n: window_times(rs) for n, rs in ok.items()}
    ref_ms = float(np.median(times[reference])) * 1e3 if reference in times else float("nan")
    entries = []
    for name, rs in runs.items():
        if name not in ok:
            error = next(r.error for r in rs if not r.correct)
            entries.append(Entry(name, roles[name], False, error))
            continue
        ms = float(np.median(times[name])) * 1e3
        entries.append(Entry(name, roles[name], True, "", float(window_balance(rs[0]).mean()), ms, ref_ms / ms))
    windows = len(next(iter(runs.values()))[0].per_window) if runs else 0
    s = SplitStanding(label, split, windows, entries)
    shipped = [e for e in entries if e.role == "shipped" and e.correct]
    best = next((e for e in entries if e.role == "best"), None)
    if best is None or not best.correct:
        s.problem = f"the best program is incorrect here ({best.error if best else 'missing'})"
        return s
    if not shipped:
        s.problem = "no shipped candidate is correct here to compare with"
        return s
    s.fastest = min(shipped, key=lambda e: e.ms_per_call).name
    s.most_balanced = max(shipped, key=lambda e: e.balance).name
    strata = np.zeros(s.windows, dtype=np.int64)
    base = ok[s.most_balanced][0]
    balance: PairStats = pair_stats(split, window_balance(base), window_balance(ok["best"][0]),
                                    times[s.most_balanced], times["best"], strata, seed, RESAMPLES)
    speed: PairStats = pair_stats(split, window_balance(ok[s.fastest][0]), window_balance(ok["best"][0]),
                                  times[s.fastest], times["best"], strata, seed, RESAMPLES)
    d, r = balance.difference, speed.runtime_ratio
    s.balance_difference = {"value": d.value, "low": d.low, "high": d.high}
    s.time_ratio = {"value": r.value, "low": r.low, "high": r.high}
    s.no_slower = r.value <= 1.0
    s.not_less_balanced = d.high >= 0.0
    return s


def other_split_tasks(task: EplbTask) -> list[tuple[str, str, EplbTask]]:
    """(label, split, task) for each split of `SPLITS_BESIDE` the task's dataset has, other than its own."""
    found = []
    mine = task.stamp()["dataset"]
    for split in SPLITS_BESIDE:
        if split == mine["split"]:
            continue
        try:
            other = task.with_options(split=split)
            stamp = other.stamp()["dataset"]
        except UserError:  # the dataset has no such split
            continue
        if stamp["sha256"] == mine["sha256"]:  # a trace file has one split only
            continue
        found.append((f"{stamp['name']} ({split} split)", split, other))
    return found


def standing(task: EplbTask, best: str, seed: str, shipped: dict[str, str], repeats: int = REPEATS,
             say: Callable[[str], None] = lambda _: None) -> Standing:
    """Best, seed and shipped candidates (name -> code) on every other split of the task's dataset."""
    if repeats < 1:
        raise UserError(f"repeats must be at least 1, got {repeats}")
    programs = {"best": best, "seed": seed, **{n: c for n, c in shipped.items() if n not in ("best", "seed")}}
    roles = {"best": "best", "seed": "seed", **{n: "shipped" for n in programs if n not in ("best", "seed")}}
    reference_code = task.sandbox.reference_code
    reference = next((n for n, c in programs.items() if c == reference_code), "")
    if not reference and reference_code:
        programs["reference"], roles["reference"], reference = reference_code, "reference", "reference"
    splits, results = [], {}
    for label, split, other in other_split_tasks(task):
        say(f"best against the seed and {len(shipped)} shipped candidates on {label}")
        runs = interleaved(other, programs, repeats, lambda line, label=label: say(f"{label}: {line}"))
        splits.append(split_standing(label, split, runs, roles, reference))
        results[label] = {n: rs[0] for n, rs in runs.items()}
    return Standing(repeats, splits, results)
