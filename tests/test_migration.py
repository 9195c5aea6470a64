"""Migration cost: slots whose expert changed, bytes that must travel, time charged against the layer time."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluator.migration import MigrationModel, migration_cost, migration_metrics
from evaluator.simulate import simulate
from evaluator.traces import save_npz
from evolve.cli import main as cli_main
from tests.evaluator_helpers import SMALL, skewed_trace, small_task, wrap_seed

# 4 experts, 8 slots on 4 GPUs (2 slots each), one layer
BASE = [0, 1, 2, 3, 0, 1, 2, 3]


DEFAULT_MODEL = MigrationModel()


def run(plans: list[list[int]], model: MigrationModel = DEFAULT_MODEL, window: int = 100):
    phy2log = torch.tensor(plans, dtype=torch.int64)[:, None, :]  # [W, 1, R]
    logcnt = torch.full((len(plans), 1, 4), 2, dtype=torch.int64)
    load = torch.full((len(plans), 1, 4), 100.0)
    sim = simulate(load, phy2log, logcnt, num_gpus=4, num_nodes=2)
    return sim, migration_cost(phy2log.numpy(), sim, num_gpus=4, window=window, model=model)


def test_an_unchanged_plan_moves_nothing_and_keeps_its_balancedness() -> None:
    sim, m = run([BASE, BASE, BASE])
    assert m.slots_changed.tolist() == [0, 0, 0] and m.bytes_moved.tolist() == [0, 0, 0]
    assert np.allclose(m.effective_balancedness, sim.balancedness_gpu.numpy())
    assert m.effective_speedup == pytest.approx(sim.speedup)


def test_a_swap_inside_one_gpu_changes_slots_but_copies_nothing() -> None:
    swapped = [1, 0, 2, 3, 0, 1, 2, 3]  # GPU 0 keeps experts {0, 1}
    _, m = run([BASE, swapped])
    assert m.slots_changed.tolist() == [0, 2] and m.slots_remote.tolist() == [0, 0]
    assert m.bytes_moved[1] == 0 and m.transfer_s[1] == 0


def test_a_new_expert_on_a_gpu_travels_and_is_charged() -> None:
    model = MigrationModel(params_per_expert=1e9, bytes_per_param=2.0, bandwidth_gbs=100.0, gpu_tflops=1.0)
    moved = [2, 1, 0, 3, 0, 1, 2, 3]  # GPU 0 now holds 2 (new) and 1; GPU 1 holds 0 (new) and 3
    sim, m = run([BASE, moved], model)
    assert m.slots_changed[1] == 2 and m.slots_remote[1] == 2
    assert m.bytes_moved[1] == pytest.approx(4e9)  # two experts of 1e9 parameters at 2 bytes
    assert m.gpu_bytes_max[1] == pytest.approx(2e9) and m.transfer_s[1] == pytest.approx(0.02)
    # the charge in token time: 0.02 s / (2e9 FLOPs per token / 1e12 FLOP/s) = 10 tokens on the hottest GPU
    peak = float(sim.layer_time[1])
    mean = float(sim.gpu_load[1].mean(-1).sum())
    assert m.effective_balancedness[1] == pytest.approx(mean / (peak + 10.0))
    assert m.effective_balancedness[0] == pytest.approx(float(sim.balancedness_gpu[0]))
    metrics = migration_metrics(m)
    assert metrics["migration_slots_per_rebalance"] == 2 and metrics["migration_slot_share"] == pytest.approx(0.25)


def test_a_longer_rebalance_interval_spreads_the_charge() -> None:
    moved = [3, 2, 1, 0, 0, 1, 2, 3]
    every = run([BASE, moved], MigrationModel(interval_steps=0))[1]
    rare = run([BASE, moved], MigrationModel(interval_steps=3000))[1]
    assert rare.transfer_s[1] == every.transfer_s[1] > 0
    assert rare.charge_s[1] == pytest.approx(every.charge_s[1] / 30)
    assert rare.effective_speedup > every.effective_speedup


def test_evaluate_json_reports_migration_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save_npz(skewed_trace(), tmp_path / "t.npz")
    flags = ["--replicas", str(SMALL["num_replicas"]), "--groups", str(SMALL["num_groups"]), "--nodes",
             str(SMALL["num_nodes"]), "--gpus", str(SMALL["num_gpus"])]
    assert cli_main(["evaluate", "candidates/seed.py", "--dataset", str(path), *flags, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    m = data["metrics"]
    for key in ("migration_slots_per_rebalance", "migration_bytes_per_rebalance", "migration_time_s",
                "balancedness_gpu_effective", "effective_speedup"):
        assert key in m
    assert m["balancedness_gpu_effective"] <= m["balancedness_gpu"] + 1e-12
    assert "migration_slots" in data["per_window"][0]


def test_a_plan_that_never_changes_pays_nothing(tmp_path: Path) -> None:
    # the seed re-planned on every window against a program that always returns the first layout it made
    task = small_task(tmp_path)
    churn = task.evaluate(wrap_seed(""))
    frozen = task.evaluate(wrap_seed("""
global _first
try:
    _first
except NameError:
    _first = (p.clone(), l.clone(), c.clone())
p, l, c = _first
"""))
    assert churn.correct and frozen.correct, frozen.error
    assert frozen.metrics["migration_slots_per_rebalance"] == 0 and frozen.metrics["migration_bytes_per_rebalance"] == 0
    assert frozen.metrics["balancedness_gpu_effective"] == pytest.approx(frozen.metrics["balancedness_gpu"])
    assert churn.metrics["migration_slots_per_rebalance"] > 0
    assert churn.metrics["balancedness_gpu_effective"] < churn.metrics["balancedness_gpu"]


def test_campaign_can_name_migration_objectives(tmp_path: Path) -> None:
    from evolve.loop import resolve_objectives

    task = small_task(tmp_path)
    chosen = resolve_objectives(["effective_speedup", "migration_bytes_per_rebalance"], task.objectives())
    assert [o.key for o in chosen] == ["effective_speedup", "migration_bytes_per_rebalance"]
    assert chosen[1].maximise is False


def test_bad_migration_options_are_one_line_errors() -> None:
    from evaluator.task import EvalOptions
    from evolve.errors import UserError

    with pytest.raises(UserError, match="migration_bandwidth_gbs"):
        EvalOptions.from_dict({"migration_bandwidth_gbs": 0})
    with pytest.raises(UserError, match="migration_interval_steps"):
        EvalOptions.from_dict({"migration_interval_steps": -5})


def test_expert_size_follows_the_model_shape_unless_given() -> None:
    from evaluator.migration import build_model

    assert build_model(0, 0, 50, 400, 0, "deepseek-v3").expert_bytes == 3 * 7168 * 2048  # FP8: one byte each
    assert build_model(0, 0, 50, 400, 0, "qwen3-30b-a3b").expert_bytes == 3 * 2048 * 768 * 2  # BF16
    assert build_model(0, 0, 50, 400, 0, "an-unknown-shape").expert_bytes == 3 * 7168 * 2048
    assert build_model(1e6, 4, 50, 400, 0, "qwen3-30b-a3b").expert_bytes == 4e6
