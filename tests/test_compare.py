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


def test_compare_needs_two_programs(capsys) -> None:
    assert cli_main(["compare", "seed"]) == 2
    assert "at least two programs" in capsys.readouterr().err
