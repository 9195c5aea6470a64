"""The evaluator's numbers: contract, simulation, protocols and scorers, checked against hand computations."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluator.contract import validate_placement
from evaluator.scoring import SCORERS, score_all
from evaluator.simulate import simulate
from evaluator.task import EplbTask, EvalOptions
from evolve.cli import main as cli_main
from evolve.errors import UserError
from tests.evaluator_helpers import REPO, SEED_CODE, SMALL, skewed_trace, small_task

README_WEIGHT = [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                 [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]]
README_PHY2LOG = [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                  [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]]
README_LOGCNT = [[1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1], [1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1]]


def load_candidate(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "candidates" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(out, weight: torch.Tensor, num_replicas: int) -> str:
    p, lp, c = (t.numpy() for t in out)
    return validate_placement(p, lp, c, weight.shape[0], weight.shape[1], num_replicas, load=weight.numpy())


def test_seed_reproduces_the_deepseek_readme_example() -> None:
    seed = load_candidate("seed")
    weight = torch.tensor(README_WEIGHT)
    phy2log, log2phy, logcnt = seed.rebalance_experts(weight, 16, 4, 2, 8)
    assert phy2log.tolist() == README_PHY2LOG
    assert logcnt.tolist() == README_LOGCNT
    assert check((phy2log, log2phy, logcnt), weight, 16) == ""


@pytest.mark.parametrize("name", ["seed", "greedy_snake"])
@pytest.mark.parametrize("shape",
                         [(58, 256, 288, 8, 4, 32), (6, 16, 24, 4, 2, 8), (3, 64, 64, 1, 1, 8), (5, 12, 16, 3, 2, 8)])
def test_reference_candidates_obey_the_contract(name: str, shape: tuple[int, ...]) -> None:
    layers, experts, replicas, groups, nodes, gpus = shape
    weight = torch.from_numpy(np.random.default_rng(1).poisson(5.0, size=(layers, experts)))
    weight[0, :3] = 0  # experts with no load still need a slot
    out = load_candidate(name).rebalance_experts(weight, replicas, groups, nodes, gpus)
    assert check(out, weight, replicas) == ""


def test_greedy_snake_counts_match_iterative_greedy() -> None:
    weight = torch.from_numpy(np.random.default_rng(2).gamma(0.5, 100.0, size=(7, 40)))
    counts = load_candidate("greedy_snake").replica_counts(weight, 64)
    iterative = torch.ones_like(counts)
    for _ in range(64 - 40):
        hottest = (weight / iterative).argmax(-1)
        iterative[torch.arange(7), hottest] += 1
    assert torch.allclose((weight / counts).amax(-1), (weight / iterative).amax(-1))


def naive_balancedness(load: np.ndarray, phy2log: np.ndarray, logcnt: np.ndarray, gpus: int) -> tuple[float, float]:
    """Per-expert Python loops, the way published evaluators compute it."""
    layers, slots = phy2log.shape
    per_gpu = slots // gpus
    mean_gpu = max_gpu = mean_slot = max_slot = 0.0
    for layer in range(layers):
        gpu_load = [0.0] * gpus
        slot_load = []
        for s in range(slots):
            e = phy2log[layer, s]
            share = load[layer, e] / logcnt[layer, e]
            slot_load.append(share)
            gpu_load[s // per_gpu] += share
        mean_gpu += sum(gpu_load) / gpus
        max_gpu += max(gpu_load)
        mean_slot += sum(slot_load) / slots
        max_slot += max(slot_load)
    return mean_gpu / max_gpu, mean_slot / max_slot


def test_simulation_matches_a_naive_loop() -> None:
    seed = load_candidate("seed")
    rng = np.random.default_rng(3)
    plan_load = torch.from_numpy(rng.poisson(rng.gamma(0.5, 20, size=(6, 32)))).double()
    score_load = torch.from_numpy(rng.poisson(rng.gamma(0.5, 20, size=(6, 32)))).double()
    phy2log, _, logcnt = seed.rebalance_experts(plan_load, 48, 4, 2, 8)
    sim = simulate(score_load[None], phy2log[None], logcnt[None], 8, 2)
    gpu, slot = naive_balancedness(score_load.numpy(), phy2log.numpy(), logcnt.numpy(), 8)
    assert sim.balancedness_gpu.item() == pytest.approx(gpu, rel=1e-12)
    assert sim.balancedness_expert.item() == pytest.approx(slot, rel=1e-12)


def test_identity_time_is_the_unbalanced_layer_time() -> None:
    load = torch.tensor([[[4.0, 0.0, 1.0, 1.0]]])
    phy2log = torch.tensor([[[0, 0, 2, 3]]])
    logcnt = torch.tensor([[[2, 0, 1, 1]]])
    sim = simulate(load, phy2log, logcnt, num_gpus=2, num_nodes=1)
    assert sim.identity_time.item() == 4.0  # experts 0,1 on GPU 0 without replicas
    assert sim.layer_time.item() == 4.0  # slots 0,1 (2+2) on GPU 0
    assert sim.balancedness_gpu.item() == pytest.approx(3.0 / 4.0)


def test_scorers_follow_their_published_formulas() -> None:
    m = {"balancedness_gpu": 0.7, "balancedness_expert": 0.3, "runtime_mean_s": 0.004}
    scores = score_all(m)
    assert scores["native"] == 0.7
    assert scores["adrs-openevolve"] == pytest.approx((0.3 + 0.02 / 0.004) / 2)
    assert scores["adrs-leaderboard"] == pytest.approx(90 * 0.7 + 5 * min(0.002 / 0.004, 2))
    slow = score_all(dict(m, runtime_mean_s=0.5))
    assert slow["adrs-leaderboard"] == pytest.approx(90 * 0.7 + 5 * 0.004 - 10.0)
    fast = score_all(dict(m, runtime_mean_s=0.0001))
    assert fast["adrs-leaderboard"] == pytest.approx(63 + 10)
    assert all(s.formula for s in SCORERS.values())


def test_predictive_protocol_never_shows_a_scoring_window(tmp_path: Path) -> None:
    task = small_task(tmp_path)
    digests = "\n".join(
        ["import hashlib", "def _digest(w):", "    return hashlib.sha256(w.numpy().tobytes()).hexdigest()"]
    )
    code = SEED_CODE.replace("def rebalance_experts(", digests + "\n\n\ndef rebalance_experts(", 1).replace(
        "    num_layers, num_experts = weight.shape\n    if num_replicas",
        "    print('SEEN', _digest(weight))\n    num_layers, num_experts = weight.shape\n    if num_replicas",
    )
    result = task.evaluate(code)
    assert result.correct, result.error
    seen = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("SEEN")}
    windows = task.trace.windows(100).numpy().astype(np.int64)
    digest = [hashlib.sha256(w.tobytes()).hexdigest() for w in windows]
    # every planning window, never the last (scoring-only) one, and one more: the untimed warm-up call's
    # input, unrelated to any window
    assert set(digest[:-1]) <= seen and digest[-1] not in seen
    assert len(seen - set(digest[:-1])) == 1
    assert len(result.per_window) == len(windows) - 1
    assert [w["window"] for w in result.per_window] == [1.0, 2.0, 3.0]


def test_in_sample_protocol_scores_the_planning_window(tmp_path: Path) -> None:
    predictive = small_task(tmp_path).evaluate(SEED_CODE)
    in_sample = small_task(tmp_path, protocol="in-sample").evaluate(SEED_CODE)
    assert len(in_sample.per_window) == len(predictive.per_window) + 1
    # planning on the very window scored is what the balancer optimises: it cannot do worse on average
    assert in_sample.metrics["balancedness_gpu"] >= predictive.metrics["balancedness_gpu"] - 0.01


def test_every_timed_call_gets_a_distinct_input(tmp_path: Path) -> None:
    memo = (
        "_seen = set()\n_r = rebalance_experts\n"
        "def rebalance_experts(w, *a):\n"
        "    key = hash(w.numpy().tobytes())\n"
        "    print('HIT' if key in _seen else 'MISS')\n"
        "    _seen.add(key)\n"
        "    return _r(w, *a)\n"
    )
    result = small_task(tmp_path).evaluate(SEED_CODE + "\n" + memo)
    assert result.correct
    assert "HIT" not in result.stdout and result.stdout.count("MISS") == 4  # 3 timed calls and the warm-up


def test_metrics_and_stamps_are_complete(tmp_path: Path) -> None:
    result = small_task(tmp_path).evaluate(SEED_CODE)
    for key in ("balancedness_gpu", "balancedness_expert", "balancedness_node", "speedup", "runtime_median_s",
                "runtime_p10_s", "runtime_p90_s", "reference_runtime_median_s", "speedup_vs_reference"):
        assert key in result.metrics and math.isfinite(result.metrics[key]), key
    assert result.metrics["speedup"] > 1.0  # balancing beats contiguous placement on skewed load
    assert set(result.scores) == set(SCORERS)
    assert result.dataset["sha256"] == skewed_trace().sha256
    assert "balancedness_gpu" in result.feedback


def test_cli_evaluate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = small_task(tmp_path)
    argv = ["evaluate", str(REPO / "candidates" / "greedy_snake.py"), "--dataset", task.options.dataset,
            "--replicas", "24", "--groups", "4", "--nodes", "2", "--gpus", "8", "--json"]
    assert cli_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["correct"] is True and out["error"] == ""
    for key in ("metrics", "scores", "per_window", "dataset", "evaluator_version"):
        assert key in out
    assert set(out["scores"]) == set(SCORERS)
    assert out["dataset"]["sha256"] == task.trace.sha256
    settings = out["settings"]
    assert ((settings["layers"], settings["experts"], settings["num_groups"], settings["groups_from"])
            == (4, 16, 4, "--groups"))
    assert (settings["split"], settings["partial_window"], settings["scored_windows"]) == ("all", "score", 3)


def test_imported_trace_is_scored_whole_with_its_partial_window(user_cache: Path) -> None:
    from evaluator import traces

    traces.save_user_dataset(skewed_trace(steps=450), "mine")  # its metadata states 4 groups
    options = {k: v for k, v in SMALL.items() if k != "num_groups"}
    task = EplbTask(EvalOptions(**options, dataset="mine", reference_calls=0))
    assert task.trace.meta["split"] == "all" and task.trace.steps == 450
    assert task.num_groups == 4 and task.partial_window == "score"
    assert task.score_windows.size(0) == 4  # windows 1..4, the last holding 50 steps
    assert task.score_windows[-1].sum() < 0.7 * task.score_windows[0].sum()
    dropped = EplbTask(EvalOptions(**options, dataset="mine", partial_window="drop", reference_calls=0))
    assert dropped.score_windows.size(0) == 3
    assert torch.equal(dropped.score_windows, task.score_windows[:3])
    with pytest.raises(UserError, match="nothing of it is held out"):
        task.with_options(split="holdout")
    with pytest.raises(UserError, match="'partial_window' must be score or drop"):
        EvalOptions.from_dict({"partial_window": "keep"})


def test_a_trace_with_no_recorded_groups_asks_for_them(tmp_path: Path, user_cache: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from evaluator.traces import Trace
    from evaluator.traces.formats import write_adrs_json

    path = write_adrs_json(Trace(skewed_trace().counts), tmp_path / "load.json")
    argv = ["evaluate", str(REPO / "candidates" / "seed.py"), "--dataset", str(path), "--replicas", "24",
            "--nodes", "2", "--gpus", "8"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "records no expert groups" in err and "--groups N" in err and len(err.splitlines()) == 1
    assert cli_main(argv + ["--groups", "4"]) == 0
    assert "4 expert groups (from --groups)" in capsys.readouterr().out


def test_cli_evaluate_missing_program_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = small_task(tmp_path)
    assert cli_main(["evaluate", str(tmp_path / "nope.py"), "--dataset", task.options.dataset]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope.py" in err and len(err.splitlines()) == 1


def test_cli_evaluate_table_for_a_bad_program(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = small_task(tmp_path)
    bad = tmp_path / "bad.py"
    bad.write_text("def rebalance_experts(:\n")
    argv = ["evaluate", str(bad), "--dataset", task.options.dataset, "--replicas", "24", "--groups", "4",
            "--nodes", "2", "--gpus", "8"]
    assert cli_main(argv) == 1
    assert "syntax error on line 1" in capsys.readouterr().out
