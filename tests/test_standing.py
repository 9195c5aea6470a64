"""The report's standing of the best program against the shipped candidates, from known per-window numbers.

No sandbox here: the results are made up so the expected roles, intervals and verdicts are known.
"""
from __future__ import annotations

import numpy as np

from evaluator.results.standing import split_standing, window_times
from evolve.task import Result

WINDOWS = 20


def _result(balance: np.ndarray, ms: np.ndarray) -> Result:
    return Result(True, per_window=[{"balancedness_gpu": float(b), "runtime_s": float(t) / 1e3}
                                    for b, t in zip(balance, ms)])


def _runs(balances: dict[str, float], ms: dict[str, float], passes: int = 3) -> dict[str, list[Result]]:
    """Each program's balance varies alike over windows (a shared hard window is hard for all); each pass adds
    slow-downs, so the fastest pass of a window is the program's own time."""
    rng = np.random.default_rng(0)
    shape = rng.normal(0, 0.01, WINDOWS)
    runs = {}
    for name, b in balances.items():
        runs[name] = [_result(b + shape + rng.normal(0, 0.0005, WINDOWS),
                              ms[name] * (1 + np.abs(rng.normal(0, 0.3, WINDOWS))) if p else np.full(WINDOWS, ms[name]))
                      for p in range(passes)]
    return runs


ROLES = {"best": "best", "seed": "seed", "fast": "shipped", "balanced": "shipped"}


def test_fastest_pass_per_window_is_the_time():
    runs = _runs({"a": 0.8}, {"a": 2.0})
    assert np.allclose(window_times(runs["a"]), 2.0 / 1e3)


def test_roles_interval_and_a_yes_verdict():
    runs = _runs({"best": 0.801, "seed": 0.74, "fast": 0.795, "balanced": 0.8},
                 {"best": 3.0, "seed": 8.0, "fast": 4.0, "balanced": 9.0})
    s = split_standing("data (holdout split)", "holdout", runs, ROLES, reference="seed")
    assert (s.fastest, s.most_balanced) == ("fast", "balanced")
    d = s.balance_difference
    assert abs(d["value"] - 0.001) < 0.0005 and d["low"] <= d["value"] <= d["high"] and d["high"] >= 0
    assert abs(s.time_ratio["value"] - 0.75) < 1e-9  # 3 ms against 4 ms in every window
    assert s.entry("best").x_reference == 8.0 / 3.0
    assert s.verdict and s.verdict_line() == ("best is no slower than fast and not significantly less balanced "
                                              "than balanced on holdout: yes")


def test_slower_or_clearly_less_balanced_best_gets_no():
    slow = split_standing("x", "holdout", _runs({"best": 0.8, "seed": 0.7, "fast": 0.79, "balanced": 0.8},
                                                 {"best": 5.0, "seed": 8.0, "fast": 4.0, "balanced": 9.0}),
                          ROLES, reference="seed")
    assert slow.time_ratio["value"] > 1 and not slow.no_slower and not slow.verdict
    worse = split_standing("x", "holdout", _runs({"best": 0.78, "seed": 0.7, "fast": 0.79, "balanced": 0.8},
                                                  {"best": 3.0, "seed": 8.0, "fast": 4.0, "balanced": 9.0}),
                           ROLES, reference="seed")
    assert worse.balance_difference["high"] < 0 and not worse.not_less_balanced
    assert worse.verdict_line().endswith(": no")


def test_an_incorrect_best_gives_no_verdict_and_says_why():
    runs = _runs({"best": 0.8, "seed": 0.7, "fast": 0.79, "balanced": 0.8},
                 {"best": 3.0, "seed": 8.0, "fast": 4.0, "balanced": 9.0})
    runs["best"] = [Result(False, error="phy2log has the wrong shape")]
    s = split_standing("x", "holdout", runs, ROLES, reference="seed")
    assert not s.verdict and "phy2log has the wrong shape" in s.verdict_line()
    assert not s.entry("best").correct
