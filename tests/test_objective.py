"""The default objective: balance plus whole octaves of speed against the reference timed in the same worker."""
from __future__ import annotations

from pathlib import Path

import pytest

from evaluator.scoring import SPEED_OCTAVES, SPEED_WEIGHT, get_scorer, score_all, speed_octaves
from evaluator.speed_memo import memo_path, remembered, timing_key
from evaluator.task import EvalOptions
from evaluator.traces import save_npz
from evolve import campaign_cli
from evolve.config import Config
from tests.evaluator_helpers import SMALL, skewed_trace
from tests.toy_task import fingerprint

ROOT = Path(__file__).resolve().parents[1]


def test_default_scorer_is_balance_plus_quantised_speed() -> None:
    assert EvalOptions().scorer == "balance-speed"
    base = {"balancedness_gpu": 0.8, "balancedness_expert": 0.3, "runtime_mean_s": 0.004}
    score = get_scorer("balance-speed").fn
    # ratios that differ by timing noise inside one octave give the same score
    assert score(dict(base, speedup_vs_reference=2.2)) == score(dict(base, speedup_vs_reference=2.7))
    assert score(dict(base, speedup_vs_reference=2.2)) == pytest.approx(0.8 + SPEED_WEIGHT * 1)
    assert score(dict(base, speedup_vs_reference=4.1)) == pytest.approx(0.8 + SPEED_WEIGHT * 2)
    assert score(dict(base, speedup_vs_reference=0.3)) == pytest.approx(0.8 - SPEED_WEIGHT * 2)
    # clamped at both ends, and no reference timed means no speed term
    assert speed_octaves({"speedup_vs_reference": 1e6}) == SPEED_OCTAVES[1]
    assert speed_octaves({"speedup_vs_reference": 1e-6}) == SPEED_OCTAVES[0]
    assert speed_octaves({}) == 0
    assert score_all(dict(base))["balance-speed"] == pytest.approx(0.8)
    # a faster program wins over a slightly better-balanced slower one; a much better-balanced one still wins
    slow_balanced = score(dict(base, balancedness_gpu=0.805, speedup_vs_reference=1.0))
    fast = score(dict(base, balancedness_gpu=0.80, speedup_vs_reference=2.0))
    assert fast > slow_balanced
    assert score(dict(base, balancedness_gpu=0.83, speedup_vs_reference=1.0)) > fast


def _config(tmp_path: Path, trace: Path, name: str) -> Config:
    config = Config()
    config.campaign.out = str(tmp_path / name)
    config.campaign.max_evaluations = 12
    config.campaign.max_minutes = 0
    config.campaign.workers = 2
    config.campaign.seed = 7
    config.campaign.progress = False
    config.campaign.seed_program = str(ROOT / "candidates" / "seed.py")
    config.task.options = dict(SMALL, dataset=str(trace), timeout_s=30.0, reference_calls=3)
    return config


def test_same_seed_same_archive_with_the_speed_objective(tmp_path: Path, user_cache: Path) -> None:
    """Two campaigns with the same seed on one machine: the same programs, scores, lineage and steps,
    although every evaluation times the programs afresh (the machine's speed memo fixes their octaves)."""
    trace = save_npz(skewed_trace(steps=600, layers=6, experts=16), tmp_path / "trace.npz")
    prints = []
    for name in ("first", "second"):
        config = _config(tmp_path, trace, name)
        summary = campaign_cli.run_campaign(config, Path(config.campaign.out), False, holdout=False)
        assert summary.evaluations == 12
        prints.append(fingerprint(Path(config.campaign.out) / "archive.sqlite"))
    assert prints[0] == prints[1]
    assert len(prints[0]["programs"]) > 5
    assert memo_path().is_file()


def test_speed_memo_keeps_the_first_measurement(tmp_path: Path) -> None:
    path = tmp_path / "memo.sqlite"
    key = timing_key("def f(): pass", {"trace": "abc"})
    assert remembered(key, 2, path) == 2
    assert remembered(key, 3, path) == 2  # a later, noisier measurement does not change the program's octave
    other = timing_key("def f(): pass", {"trace": "abd"})
    assert other != key and remembered(other, -1, path) == -1


def test_the_task_states_its_shape_and_the_metrics_a_prompt_shows(tmp_path: Path) -> None:
    from evolve.prompts import build_messages
    from evolve.proposers.base import ProgramView, ProposalRequest
    from evolve.task import DescribedTask
    from tests.evaluator_helpers import SEED_CODE, small_task

    task = small_task(tmp_path)
    statement = task.problem_statement()
    assert "weight is [4, 16]" in statement and "24 slots (8 redundant)" in statement
    assert "3 slots per GPU, 8 GPUs, 2 nodes, 4 expert groups of 4" in statement and "balance-speed" in statement
    assert isinstance(task, DescribedTask)
    result = task.evaluate(SEED_CODE)
    view = ProgramView("p" * 12, SEED_CODE, result.metrics, result.score, result.feedback)
    request = ProposalRequest(parent=view, metric_keys=task.prompt_metrics(), problem_statement=statement)
    user = build_messages(request)[1]["content"]
    shown = user[user.index("Metrics:"): user.index("\n", user.index("Metrics:"))]
    assert "balancedness_gpu" in shown and "speedup_vs_reference" in shown and "runtime_median_s" in shown
    assert "harness_overhead_s" not in shown  # harness internals stay out of the prompt
    assert "worst window" in user and "layers with the worst GPU balance" in user
