"""Paired comparison: bootstrap intervals, win rates, runtime ratios, plain verdicts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluator.results import compare as cmp
from evaluator.traces import save_npz
from evolve.cli import main as cli_main
from evolve.task import Result
from tests.evaluator_helpers import REPO, skewed_trace

SMALL_FLAGS = ["--replicas", "24", "--groups", "4", "--nodes", "2", "--gpus", "8"]


def fake(values: list[float], times: list[float]) -> Result:
    windows = [{"window": float(i + 1), "balancedness_gpu": v, "balancedness_expert": v, "balancedness_node": v,
                "runtime_s": t} for i, (v, t) in enumerate(zip(values, times))]
    return Result(correct=True, per_window=windows, scores={"native": float(np.mean(values))})


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    x = np.random.default_rng(0).normal(0.3, 1.0, size=40)
    strata = np.zeros(40, dtype=int)
    a = cmp.stratified_bootstrap(x, strata, np.random.default_rng(5), 2000)
    b = cmp.stratified_bootstrap(x, strata, np.random.default_rng(5), 2000)
    assert a == b
    assert a[0] < x.mean() < a[1]
    assert cmp.stratified_bootstrap(np.full(7, 0.25), np.zeros(7, int), np.random.default_rng(1), 500) == (0.25, 0.25)


def test_bootstrap_keeps_each_dataset_share() -> None:
    # two datasets with constant values: any resample keeps 3 of one and 1 of the other, so the mean is fixed
    x = np.array([1.0, 1.0, 1.0, 5.0])
    assert cmp.stratified_bootstrap(x, np.array([0, 0, 0, 1]), np.random.default_rng(2), 300) == (2.0, 2.0)


def test_a_consistent_gain_is_significant_with_its_runtime_ratio() -> None:
    base = fake([0.70, 0.72, 0.69, 0.75, 0.71], [1e-3] * 5)
    other = fake([0.74, 0.75, 0.74, 0.78, 0.73], [2e-3] * 5)
    [c] = cmp.compare_results(["base", "other"], {"d/s": {"base": base, "other": other}}, "balancedness_gpu")
    s = c.pooled
    assert s is not None and s.significant
    assert (s.wins, s.ties, s.losses) == (5, 0, 0) and s.win_rate == 1.0
    assert s.difference.value == pytest.approx(0.034)
    assert s.difference.low > 0
    assert s.runtime_ratio.value == pytest.approx(2.0) and s.runtime_ratio_p10 == pytest.approx(2.0)
    assert cmp.verdict(c, s).startswith("other is better than base by 0.0340")


def test_noise_is_called_not_significant() -> None:
    rng = np.random.default_rng(3)
    base_values = rng.uniform(0.6, 0.8, size=12)
    other_values = base_values + rng.normal(0, 0.01, size=12)
    other_values -= other_values.mean() - base_values.mean()  # exactly no mean difference
    results = {"d/s": {"a": fake(list(base_values), [1e-3] * 12), "b": fake(list(other_values), [1e-3] * 12)}}
    [c] = cmp.compare_results(["a", "b"], results, "balancedness_gpu")
    assert not c.pooled.significant
    assert cmp.verdict(c, c.pooled).startswith("no significant difference")
    text = "\n".join(cmp.format_comparison(c, 1))
    assert "no significant difference" in text and "includes 0" in text


def test_per_dataset_breakdown_pools_and_reports_failures() -> None:
    results = {
        "one/holdout": {"a": fake([0.5, 0.6], [1.0, 1.0]), "b": fake([0.6, 0.7], [1.0, 1.0])},
        "two/holdout": {"a": fake([0.5, 0.5, 0.5], [1.0] * 3), "b": fake([0.4, 0.4, 0.4], [1.0] * 3)},
        "three/holdout": {"a": fake([0.5], [1.0]), "b": Result.failure("window 0: zero replicas: expert 3")},
    }
    [c] = cmp.compare_results(["a", "b"], results, "balancedness_gpu", resamples=500)
    assert [p.scope for p in c.per_dataset] == ["one/holdout", "two/holdout"]
    assert c.pooled.windows == 5 and c.pooled.wins == 2 and c.pooled.losses == 3
    assert c.pooled.difference.value == pytest.approx((0.1 * 2 - 0.1 * 3) / 5)
    assert c.failures == ["b on three/holdout: window 0: zero replicas: expert 3"]
    text = "\n".join(cmp.format_comparison(c, 3))
    assert "INCORRECT b on three/holdout" in text and "per dataset:" in text and "two/holdout" in text


def test_compare_command_on_a_trace(tmp_path: Path, capsys) -> None:
    path = save_npz(skewed_trace(steps=600, seed=2), tmp_path / "t.npz")
    copy = tmp_path / "seed_again.py"
    copy.write_text((REPO / "candidates" / "seed.py").read_text())
    code = cli_main(["compare", "seed", "hybrid_tail_swap", str(copy), "--dataset", str(path), *SMALL_FLAGS,
                     "--resamples", "500"])
    text = capsys.readouterr().out
    assert code == 0
    assert "hybrid_tail_swap vs seed" in text and "win rate" in text and "95% CI" in text
    assert f"sha256 {skewed_trace(steps=600, seed=2).sha256}" in text
    same = text[text.index("seed_again vs seed"):]
    assert "no significant difference" in same and "(0 wins, 5 ties, 0 losses)" in same

    code = cli_main(["compare", "seed", "greedy_snake", "--dataset", str(path), *SMALL_FLAGS, "--json",
                     "--resamples", "200"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["metric"] == "balancedness_gpu"
    assert data["comparisons"][0]["other"] == "greedy_snake" and data["comparisons"][0]["pooled"]["windows"] == 5
    pooled = data["comparisons"][0]["pooled"]
    assert pooled["naive_difference"]["low"] <= pooled["difference"]["value"] <= pooled["naive_difference"]["high"]
    assert pooled["blocks"] >= 1 and pooled["block_lengths"] and data["holm_tests"] == 1


def test_compare_needs_two_programs(capsys) -> None:
    assert cli_main(["compare", "seed"]) == 2
    assert "at least two programs" in capsys.readouterr().err


# ---- the block bootstrap's coverage on correlated windows ------------------------------------------------
def ar1_windows(rng: np.random.Generator, reps: int, n: int, phi: float) -> np.ndarray:
    """`reps` stationary AR(1) series of `n` windows (unit innovations)."""
    noise = rng.normal(size=(reps, n))
    x = np.empty_like(noise)
    x[:, 0] = noise[:, 0] / np.sqrt(1 - phi * phi)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    return x


def coverage(n: int, phi: float, reps: int = 400, seed: int = 11) -> tuple[float, float]:
    """Share of paired data sets whose block and naive 95% intervals cover the true difference."""
    rng = np.random.default_rng(seed)
    true_difference = 0.004
    # two balancers on the same windows: a shared window difficulty cancels in the paired difference,
    # what is left is a known difference plus correlated per-window noise
    hardness = rng.normal(0.8, 0.05, size=(reps, n))
    base = hardness + 0.002 * rng.normal(size=(reps, n))
    other = base + true_difference + 0.003 * ar1_windows(rng, reps, n, phi)
    strata = np.zeros(n, dtype=int)
    block_hits = naive_hits = 0
    for b, o in zip(base, other):
        s = cmp.pair_stats("d/s", b, o, np.ones(n), np.ones(n), strata, int(rng.integers(1 << 30)), 500)
        block_hits += s.difference.low <= true_difference <= s.difference.high
        naive_hits += s.naive_difference.low <= true_difference <= s.naive_difference.high
    return block_hits / reps, naive_hits / reps


@pytest.mark.parametrize("n", [11, 16, 40])
def test_block_interval_covers_correlated_windows_where_the_naive_one_does_not(n: int) -> None:
    block, naive = coverage(n, phi=0.6)
    assert block >= 0.90, f"block bootstrap covered {block:.3f} at nominal 0.95"
    assert naive < 0.80, f"the iid bootstrap covered {naive:.3f}: the data are not correlated enough to show it"
    assert block > naive + 0.15


def test_block_interval_stays_close_to_nominal_on_independent_windows() -> None:
    block, naive = coverage(20, phi=0.0)
    assert 0.92 <= block <= 0.995 and naive >= 0.88


def test_block_length_follows_the_autocorrelation() -> None:
    from evaluator.results import bootstrap as bs

    rng = np.random.default_rng(4)
    assert bs.block_length(rng.normal(size=40)) <= 2
    assert bs.block_length(ar1_windows(rng, 1, 40, 0.9)[0]) >= 5
    assert bs.block_length(np.arange(11.0)) == 3  # a trend: the cap (n // 3) keeps three blocks


def test_student_t_and_holm_against_known_values() -> None:
    from evaluator.results import bootstrap as bs

    for df, q in [(1, 12.706), (2, 4.303), (5, 2.571), (10, 2.228), (30, 2.042)]:
        assert bs.student_t_quantile(0.975, df) == pytest.approx(q, abs=1e-3)
    assert bs.student_t_cdf(0.0, 7) == pytest.approx(0.5)
    assert bs.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_many_comparisons_are_holm_corrected() -> None:
    rng = np.random.default_rng(8)
    base = rng.uniform(0.6, 0.8, size=30)
    results = {"d/s": {"base": fake(list(base), [1e-3] * 30)}}
    # one modest gain (p a little under 0.05 alone) among several programs with no gain
    gain = base + 0.0025 + rng.normal(0, 0.005, size=30)
    results["d/s"]["gain"] = fake(list(gain), [1e-3] * 30)
    for i in range(5):
        results["d/s"][f"same{i}"] = fake(list(base + rng.normal(0, 0.005, size=30)), [1e-3] * 30)
    names = ["base", "gain"] + [f"same{i}" for i in range(5)]
    comparisons = cmp.compare_results(names, results, "balancedness_gpu", resamples=2000)
    s = comparisons[0].pooled
    assert s.p_holm >= s.p_value and all(c.pooled.p_holm >= c.pooled.p_value for c in comparisons)
    report = cmp.CompareReport("balancedness_gpu", 0, 2000, [], comparisons)
    assert report.tests == 6 and "Holm's correction over 6 comparisons" in cmp.format_report(report)
