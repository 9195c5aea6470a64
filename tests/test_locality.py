"""Locality: the fewest nodes a sampled token's experts span under a placement (`cross_node`)."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from evaluator.locality import (
    RouteSamples,
    assign_windows,
    locality_metrics,
    measure,
    min_nodes,
    min_nodes_exact,
    min_nodes_greedy,
    node_masks,
    route_samples,
)
from evaluator.task import EplbTask, EvalOptions
from evaluator.traces import Trace, save_npz
from evolve.cli import main as cli_main
from evolve.errors import UserError
from evolve.loop import resolve_objectives
from evolve.task import Result
from tests.evaluator_helpers import REPO, SMALL, routed_trace, skewed_trace

# 7 experts, 8 slots on 2 nodes (slots 0-3 on node 0, 4-7 on node 1); expert 0 has a replica on each node
PLAN = [0, 1, 2, 3, 0, 4, 5, 6]


def spans(plan: list[int], tokens: list[list[int]], num_nodes: int = 2, num_experts: int = 7) -> list[int]:
    """Nodes spanned by each token (one layer) under one plan."""
    masks = node_masks(np.array([plan]), num_nodes, num_experts)  # [1, E]
    return min_nodes(masks[0][np.array(tokens)], num_nodes).tolist()


def test_node_masks_mark_every_node_holding_a_replica() -> None:
    masks = node_masks(np.array([PLAN]), 2, 7)[0]
    assert masks.tolist() == [0b11, 0b01, 0b01, 0b01, 0b10, 0b10, 0b10]


def test_a_token_whose_experts_share_a_node_spans_one() -> None:
    assert spans(PLAN, [[1, 2, 3], [4, 5, 6]]) == [1, 1]


def test_a_replica_on_the_right_node_is_chosen() -> None:
    # expert 0 lives on both nodes: with 1-3 it is served from node 0, with 4-6 from node 1
    assert spans(PLAN, [[0, 1, 2], [0, 5, 6], [0, 1, 4]]) == [1, 1, 2]


def test_experts_on_different_nodes_span_both() -> None:
    assert spans(PLAN, [[1, 4], [3, 6]]) == [2, 2]
    assert spans(PLAN, [[3, 6, 2]]) == [2]


def test_four_nodes_each_expert_elsewhere() -> None:
    plan = [0, 1, 2, 3]  # one slot per node
    assert spans(plan, [[0, 1, 2, 3]], num_nodes=4, num_experts=4) == [4]
    assert spans(plan, [[0, 2], [1, 3]], num_nodes=4, num_experts=4) == [2, 2]
    assert spans(plan, [[3]], num_nodes=4, num_experts=4) == [1]


# nodes as sets of experts: A = {1, 2, 3} on node 0, B = {4, 5, 6} on node 1, C = {1, 2, 4, 5} on node 2.
# A greedy cover takes C first (4 experts) and then needs A and B; the minimum is A and B.
TRAP = np.array([[0b101, 0b101, 0b001, 0b110, 0b110, 0b010]])


def test_the_exact_cover_beats_the_greedy_trap() -> None:
    assert min_nodes_exact(TRAP, 3).tolist() == [2]
    assert min_nodes_greedy(TRAP, 3).tolist() == [3]


def test_greedy_cover_on_easy_cases() -> None:
    masks = np.array([[0b001, 0b001], [0b011, 0b010], [0b001, 0b100], [0b111, 0b111]])
    assert min_nodes_greedy(masks, 3).tolist() == [1, 1, 2, 1]


def brute_force(masks: np.ndarray, num_nodes: int) -> int:
    for size in range(1, num_nodes + 1):
        for nodes in itertools.combinations(range(num_nodes), size):
            chosen = sum(1 << n for n in nodes)
            if all(int(m) & chosen for m in masks):
                return size
    raise AssertionError("no cover")


@pytest.mark.parametrize("num_nodes", [1, 3, 4, 6])
def test_exact_cover_matches_brute_force(num_nodes: int) -> None:
    rng = np.random.default_rng(num_nodes)
    masks = rng.integers(1, 1 << num_nodes, size=(300, 5))
    sparse = 1 << rng.integers(0, num_nodes, size=(300, 5))  # mostly one node per expert: larger covers
    for batch in (masks, sparse):
        expected = [brute_force(row, num_nodes) for row in batch]
        assert min_nodes_exact(batch, num_nodes).tolist() == expected
        greedy = min_nodes_greedy(batch, num_nodes)
        assert (greedy >= np.array(expected)).all()


def test_route_samples_absent_or_checked() -> None:
    trace = skewed_trace(steps=20)
    assert route_samples(trace) is None
    trace.routes = np.zeros((3, trace.num_layers, 2), dtype=np.int16)
    trace.route_steps = np.array([0, 5, 19])
    got = route_samples(trace)
    assert got is not None and got.routes.shape == (3, 4, 2) and got.steps.tolist() == [0, 5, 19]
    for routes, steps, words in [
        (np.zeros((3, 4, 2), dtype=np.int16), None, "must come together"),
        (np.zeros((3, 3, 2), dtype=np.int16), np.array([0, 1, 2]), "4 layers"),
        (np.full((3, 4, 2), 16, dtype=np.int16), np.array([0, 1, 2]), "outside [0, 16)"),
        (np.zeros((3, 4, 2), dtype=np.int16), np.array([2, 1, 3]), "non-decreasing"),
        (np.zeros((3, 4, 2), dtype=np.int16), np.array([0, 1, 20]), "[0, 20)"),
        (np.zeros((3, 4, 2), dtype=np.float32), np.array([0, 1, 2]), "integer"),
    ]:
        trace.routes, trace.route_steps = routes, steps
        with pytest.raises(UserError, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")) as err:
            route_samples(trace)
        assert "\n" not in str(err.value)


def test_tokens_are_measured_against_the_plan_of_their_window() -> None:
    # two windows of 10 steps; the plan of window 0 keeps experts 1-3 on node 0, that of window 1 moves 1 to node 1
    plans = np.array([[PLAN], [[0, 4, 2, 3, 0, 1, 5, 6]]])  # [W, L=1, R]
    samples = RouteSamples(routes=np.array([[[1, 2]], [[1, 2]], [[1, 2]]]), steps=np.array([3, 12, 15]))
    both = assign_windows(samples, window=10, first_window=0, num_windows=2, total_steps=20, num_experts=7)
    assert both.plan.tolist() == [0, 1, 1] and both.sampled == 3
    loc = measure(plans, both, num_nodes=2, num_experts=7)
    assert loc.tokens.tolist() == [1, 2] and loc.spanned.tolist() == [1, 4]
    metrics = locality_metrics(loc)
    assert metrics["cross_node"] == pytest.approx(5 / 3) and metrics["cross_node_share"] == pytest.approx(2 / 3)
    # predictive: scored windows start at window 1, and the token of window 0 is not scored
    later = assign_windows(samples, window=10, first_window=1, num_windows=1, total_steps=20, num_experts=7)
    assert later.plan.tolist() == [0, 0] and later.sampled == 2
    assert measure(plans[1:], later, num_nodes=2, num_experts=7).spanned.tolist() == [4]


# A balancer that reads which window it is planning from the load: the quiet window 0 gets a layout with
# experts 0-7 on node 0, the busy window 1 one that interleaves them (even ids on node 0, odd on node 1).
WINDOW_AWARE = '''
import torch

def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):
    layers, experts = weight.shape
    if float(weight.sum()) < 1000:
        row = list(range(8)) + list(range(4)) + list(range(8, 16)) + list(range(8, 12))
    else:
        evens, odds = list(range(0, 16, 2)), list(range(1, 16, 2))
        row = evens + evens[:4] + odds + odds[:4]
    phy2log = torch.tensor([row] * layers, dtype=torch.int64)
    logcnt = torch.zeros(layers, experts, dtype=torch.int64).scatter_add_(1, phy2log, torch.ones_like(phy2log))
    log2phy = torch.full((layers, experts, 2), -1, dtype=torch.int64)
    seen = [0] * experts
    for slot, e in enumerate(row):
        log2phy[:, e, seen[e]] = slot
        seen[e] += 1
    return phy2log, log2phy, logcnt
'''


def window_aware_task(protocol: str) -> EplbTask:
    counts = np.ones((20, 2, 16), dtype=np.int64)
    counts[10:] = 50  # window 1 is busy
    trace = Trace(counts, {"name": "two-windows", "num_groups": 4})
    trace.routes = np.tile(np.array([0, 1], dtype=np.int16), (6, 2, 1))  # experts 0 and 1 in both layers
    trace.route_steps = np.array([2, 4, 11, 13, 15, 19])
    options = EvalOptions(**SMALL, dataset="two-windows", window=10, protocol=protocol, timeout_s=20.0,
                          reference_calls=0)
    return EplbTask(options, trace=trace)


def test_predictive_scores_window_ones_tokens_on_window_zeros_plan() -> None:
    predictive = window_aware_task("predictive").evaluate(WINDOW_AWARE)
    assert predictive.correct, predictive.error
    # the plan of quiet window 0 (experts 0 and 1 both on node 0) meets the tokens of window 1
    assert predictive.metrics["cross_node"] == 1.0 and predictive.metrics["cross_node_tokens"] == 4
    assert predictive.per_window[0]["cross_node"] == 1.0

    in_sample = window_aware_task("in-sample").evaluate(WINDOW_AWARE)
    assert in_sample.correct, in_sample.error
    # window 0's tokens on window 0's plan (1 node), window 1's on the interleaved plan (2 nodes)
    assert [w["cross_node"] for w in in_sample.per_window] == [1.0, 2.0]
    assert in_sample.metrics["cross_node"] == pytest.approx((2 * 1 + 4 * 2) / 6)
    assert in_sample.metrics["cross_node_share"] == pytest.approx(4 / 6)


def test_the_first_stage_pools_only_its_windows() -> None:
    task = window_aware_task("in-sample")
    full = task.evaluate(WINDOW_AWARE)
    task.options = EvalOptions(**{**task.options.__dict__, "first_stage_windows": 1})
    stage = task.first_stage_of(full)
    assert stage.metrics["cross_node"] == 1.0 and stage.metrics["cross_node_tokens"] == 2


def test_hierarchical_seed_spans_fewer_nodes_than_global_snake() -> None:
    trace = routed_trace(steps=300, layers=4, experts=64, num_groups=8, top_groups=4, top_k=8, tokens_per_step=8)
    options = EvalOptions(dataset="routed", num_replicas=80, num_nodes=4, num_gpus=16, timeout_s=30.0,
                          reference_calls=0)
    task = EplbTask(options, trace=trace)
    seed = task.evaluate((REPO / "candidates" / "seed.py").read_text())
    snake = task.evaluate((REPO / "candidates" / "greedy_snake.py").read_text())
    assert seed.correct and snake.correct, (seed.error, snake.error)
    print(f"cross_node seed {seed.metrics['cross_node']:.3f} (share {seed.metrics['cross_node_share']:.3f}), "
          f"greedy_snake {snake.metrics['cross_node']:.3f} (share {snake.metrics['cross_node_share']:.3f})")
    # groups packed two per node: a token's 4 groups sit on 2-4 nodes (3.14 on average when the 4 groups fall
    # at random); scattered experts reach nearly all 4 nodes, a little less where a hot one has replicas
    assert 2.0 <= seed.metrics["cross_node"] < snake.metrics["cross_node"] - 0.15
    assert 3.3 < snake.metrics["cross_node"] <= 4.0


def test_no_routes_means_no_metrics_and_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save_npz(skewed_trace(), tmp_path / "t.npz")
    flags = ["--dataset", str(path), "--replicas", str(SMALL["num_replicas"]), "--groups", str(SMALL["num_groups"]),
             "--nodes", str(SMALL["num_nodes"]), "--gpus", str(SMALL["num_gpus"]), "--max-windows", "2"]
    assert cli_main(["evaluate", "candidates/seed.py", *flags, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert not any(key.startswith("cross_node") for key in data["metrics"])
    assert not any(key.startswith("cross_node") for w in data["per_window"] for key in w)
    assert data["settings"]["locality"].startswith("unavailable: the trace carries no routed-token samples")
    assert cli_main(["evaluate", "candidates/seed.py", *flags]) == 0
    table = capsys.readouterr().out
    line = next(row for row in table.splitlines() if row.startswith("locality"))
    assert "unavailable for this trace" in line and "imported traces" in line


def test_a_locality_objective_without_routes_is_a_one_line_error(tmp_path: Path) -> None:
    path = save_npz(skewed_trace(), tmp_path / "t.npz")
    task = EplbTask(EvalOptions(**SMALL, dataset=str(path), reference_calls=0))
    assert resolve_objectives(["balance-speed"], task.objectives())  # other objectives are fine
    for key in ("cross_node", "cross_node_share"):
        with pytest.raises(UserError) as err:
            resolve_objectives(["balance-speed", key], task.objectives())
        message = str(err.value)
        assert "\n" not in message
        assert f"'{key}' is unavailable" in message and "no routed-token samples" in message
        assert f"remove {key} from campaign.objectives" in message


def test_fewer_nodes_rank_higher() -> None:
    trace = routed_trace(steps=40, layers=2, experts=16, num_groups=4, top_groups=2, top_k=4, tokens_per_step=4)
    task = EplbTask(EvalOptions(**SMALL, dataset="routed", window=10, reference_calls=0), trace=trace)
    cross, share = resolve_objectives(["cross_node", "cross_node_share"], task.objectives())
    assert not cross.maximise and not share.maximise
    local = Result(correct=True, metrics={"cross_node": 1.2, "cross_node_share": 0.2})
    scattered = Result(correct=True, metrics={"cross_node": 1.9, "cross_node_share": 0.9})
    assert cross.value(local) > cross.value(scattered) and share.value(local) > share.value(scattered)
    assert "cross_node" in task.prompt_metrics()


def test_a_window_with_many_samples_is_measured_on_evenly_spaced_ones() -> None:
    routes = np.arange(12, dtype=np.int64).reshape(12, 1, 1)  # token s picks expert s: its index shows its row
    samples = RouteSamples(routes=routes, steps=np.array([0] * 10 + [10, 11]))
    tokens = assign_windows(samples, window=10, first_window=0, num_windows=2, total_steps=20, num_experts=12, cap=4)
    assert tokens.plan.tolist() == [0, 0, 0, 0, 1, 1] and tokens.sampled == 12
    assert tokens.index[0, :, 0].tolist() == [0, 2, 5, 7, 12 + 10, 12 + 11]
    every = assign_windows(samples, window=10, first_window=0, num_windows=2, total_steps=20, num_experts=12)
    assert every.plan.size == 12


def test_a_campaign_asking_for_cross_node_without_routes_stops_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save_npz(skewed_trace(), tmp_path / "t.npz")
    sets = [f"task.options.{key}={value}" for key, value in SMALL.items()]
    args = ["run", "--dataset", str(path), "--max-evaluations", "2", "--out", str(tmp_path / "run"),
            "--set", 'campaign.objectives=["balance-speed", "cross_node"]']
    for item in sets:
        args += ["--set", item]
    assert cli_main(args) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'cross_node' is unavailable" in err and "no routed-token samples" in err
    assert not (tmp_path / "run").exists()


def test_evaluate_table_and_settings_show_the_measured_locality() -> None:
    from evaluator.evaluate_cli import format_table, result_json, task_settings

    task = window_aware_task("in-sample")
    result = task.evaluate(WINDOW_AWARE)
    settings = task_settings(task)
    assert settings["locality"].startswith("measured on 6 of the 6 routed-token samples")
    line = next(row for row in format_table("w", result, settings).splitlines() if row.startswith("locality"))
    assert "cross_node 1.667 nodes per token and layer" in line and "66.7% span more than one node" in line
    data = json.loads(json.dumps(result_json(result, settings)))
    assert data["metrics"]["cross_node"] == pytest.approx(10 / 6)
