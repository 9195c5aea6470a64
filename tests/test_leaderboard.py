"""Lower bounds and the leaderboard: ceilings no placement beats, rows for every scorer, stamped outputs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from evaluator import EVALUATOR_VERSION
from evaluator.bounds import balancedness_ceilings, optimal_peak_per_replica
from evaluator.results import leaderboard as lb
from evaluator.simulate import simulate
from evaluator.task import EplbTask, EvalOptions
from evaluator.traces import save_npz
from evolve.cli import main as cli_main
from evolve.errors import UserError
from evolve.task import Result
from tests.evaluator_helpers import REPO, SMALL, skewed_trace

BROKEN = ("def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):\n"
          "    raise RuntimeError('nope')\n")


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory) -> Path:
    return save_npz(skewed_trace(steps=500), tmp_path_factory.mktemp("lb") / "small.npz")


def small_options(path: Path) -> dict:
    return {**SMALL, "timeout_s": 20.0, "reference_calls": 1}


# ---- bounds -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_optimal_peak_matches_the_one_at_a_time_greedy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    experts = int(rng.integers(2, 30))
    replicas = experts + int(rng.integers(0, 2 * experts))
    weight = torch.from_numpy(rng.gamma(0.5, 40.0, size=(3, 4, experts)))
    counts = torch.ones_like(weight)
    for _ in range(replicas - experts):
        per = weight / counts
        counts.scatter_add_(-1, per.argmax(-1, keepdim=True), torch.ones_like(per[..., :1]))
    expected = (weight / counts).amax(-1)
    assert torch.allclose(optimal_peak_per_replica(weight, replicas, chunk=5), expected)


def test_ceiling_by_hand() -> None:
    # one layer, experts 12, 3, 1 on R=4 slots, G=2 GPUs: T* = 6 (12 split in two), total/G = 8
    window = torch.tensor([[[12.0, 3.0, 1.0]]])
    c = balancedness_ceilings(window, num_replicas=4, num_gpus=2, num_nodes=1)
    assert c.peak_per_replica.tolist() == [[6.0]]
    assert c.balancedness_gpu.tolist() == [1.0]  # max(8, 6) = 8 = mean
    assert c.balancedness_expert.tolist() == [pytest.approx(4.0 / 6.0)]  # mean slot 4, hottest slot >= 6
    hot = torch.tensor([[[30.0, 1.0, 1.0]]])  # no spare slot (R = E = 3): T* = 30 exceeds total/G = 32/3
    assert balancedness_ceilings(hot, 3, 3, 1).balancedness_gpu.tolist() == [pytest.approx((32 / 3) / 30)]


def test_no_balancer_beats_the_ceiling_even_in_sample(tmp_path: Path) -> None:
    trace = skewed_trace(steps=300, layers=5, experts=16, seed=9)
    task = EplbTask(EvalOptions(**SMALL, dataset=str(save_npz(trace, tmp_path / "t.npz")), protocol="in-sample",
                                reference_calls=0))
    c = balancedness_ceilings(task.score_windows, 24, 8, 2)
    for name in ["seed", "greedy_snake", "hybrid_tail_swap"]:
        result = task.evaluate((REPO / "candidates" / f"{name}.py").read_text())
        got = np.array([[w["balancedness_gpu"], w["balancedness_expert"], w["balancedness_node"]]
                        for w in result.per_window])
        assert (got[:, 0] <= c.balancedness_gpu.numpy() + 1e-12).all()
        assert (got[:, 1] <= c.balancedness_expert.numpy() + 1e-12).all()
        assert (got[:, 2] <= c.balancedness_node.numpy() + 1e-12).all()


def test_ceiling_is_reached_by_a_perfect_placement() -> None:
    # 4 equal experts on 4 slots, 2 GPUs: the identity placement is perfect and so is the bound
    window = torch.full((1, 1, 4), 5.0)
    sim = simulate(window, torch.arange(4).view(1, 1, 4), torch.ones(1, 1, 4, dtype=torch.int64), 2, 1)
    assert balancedness_ceilings(window, 4, 2, 1).balancedness_gpu.item() == sim.balancedness_gpu.item() == 1.0


# ---- the board ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def board(trace_file: Path) -> pd.DataFrame:
    programs = lb.discover(["seed", "greedy_snake", "hybrid_tail_swap"])
    spec = lb.BoardSpec(programs, [str(trace_file)], ["holdout"], small_options(trace_file), scorer="adrs-leaderboard")
    return lb.build(spec)


def test_board_has_every_candidate_the_oracle_and_the_ceiling(board: pd.DataFrame, trace_file: Path) -> None:
    assert list(board["kind"][:2]) == ["ceiling", "oracle"]
    assert set(board.loc[board["kind"] == "candidate", "entry"]) == {"seed", "greedy_snake", "hybrid_tail_swap"}
    candidates = board[board["kind"] == "candidate"]
    assert list(candidates["adrs-leaderboard"]) == sorted(candidates["adrs-leaderboard"], reverse=True)
    assert bool(board["correct"].all())
    assert (board["native"] == board["balancedness_gpu"]).all()
    # every row, the oracle included, is scored on the same windows
    assert set(board["windows"]) == {4}
    ceiling = board[board["kind"] == "ceiling"].iloc[0]
    assert (board["native"] <= ceiling["native"] + 1e-12).all()
    assert ceiling["adrs-leaderboard"] == pytest.approx(90 * ceiling["native"] + 10)
    assert np.isnan(ceiling["adrs-openevolve"]) and np.isnan(ceiling["runtime_ms"])
    # the oracle is the best candidate by native score, planned on the window it is scored on
    best = candidates.loc[candidates["native"].idxmax(), "entry"]
    oracle = board[board["kind"] == "oracle"].iloc[0]
    assert oracle["entry"] == f"oracle ({best})"
    assert oracle["native"] >= candidates["native"].max()
    assert oracle["protocol"] == "in-sample" and set(candidates["protocol"]) == {"predictive"}
    # speeds are against the seed's row, timed in the same session
    seed_ms = candidates.loc[candidates["entry"] == "seed", "runtime_ms"].iloc[0]
    timed = board[board["kind"] != "ceiling"]
    assert np.allclose(timed["speed_vs_seed"], seed_ms / timed["runtime_ms"])
    # timing is repeated by default and its spread shown beside each runtime
    timed_rows = board[board["kind"] != "ceiling"]
    assert set(timed_rows["repeats"]) == {lb.DEFAULT_REPEATS} and lb.DEFAULT_REPEATS >= 3
    assert (timed_rows["runtime_spread_ms"] >= 0).all() and np.isnan(ceiling["runtime_spread_ms"])
    assert "spread ms" in lb.format_board(board, "adrs-leaderboard")
    # stamps: a file is one split; the checksum is the trace's
    assert set(board["split"]) == {lb.FILE_SPLIT}
    assert set(board["sha256"]) == {skewed_trace(steps=500).sha256}
    assert set(board["evaluator"]) == {EVALUATOR_VERSION}



def test_board_gives_each_candidate_a_paired_interval_against_the_best(board: pd.DataFrame) -> None:
    candidates = board[board["kind"] == "candidate"].set_index("entry")
    best = candidates["balancedness_gpu"].idxmax()
    assert candidates.loc[best, "vs_best"] == 0 and np.isnan(candidates.loc[best, "vs_best_low"])
    for _, row in candidates.drop(index=best).iterrows():
        assert row["vs_best"] == pytest.approx(row["balancedness_gpu"] - candidates.loc[best, "balancedness_gpu"])
        assert row["vs_best_low"] <= row["vs_best"] <= row["vs_best_high"]
        assert 0 <= row["vs_best_p_holm"] <= 1
    assert (candidates["migration_slot_share"].between(0, 1)).all()
    assert (candidates["balancedness_gpu_effective"] <= candidates["balancedness_gpu"] + 1e-12).all()
    text = lb.format_board(board, "adrs-leaderboard")
    assert "vs best (95% CI)" in text and "Holm" in text

def test_oracle_scores_the_windows_the_predictive_task_scores(trace_file: Path) -> None:
    task = EplbTask(EvalOptions(**small_options(trace_file), dataset=str(trace_file), max_windows=4))
    oracle = lb.oracle_task(task)
    assert oracle.options.protocol == "in-sample"
    assert torch.equal(oracle.score_windows, task.score_windows)


def test_board_tables_are_written_and_stamped(board: pd.DataFrame, tmp_path: Path) -> None:
    csv_path, md_path = lb.write_board(board, tmp_path, "adrs-leaderboard")
    again = pd.read_csv(csv_path)
    assert list(again.columns) == lb.COLUMNS and len(again) == len(board)
    md = md_path.read_text()
    assert board["sha256"].iloc[0] in md and f"evaluator {EVALUATOR_VERSION}" in md
    assert "| entry | native |" in md and "adrs-leaderboard *" in md
    text = lb.format_board(board, "adrs-leaderboard")
    assert "oracle (" in text and "ceiling (lower bounds)" in text


def test_leaderboard_command_reports_a_broken_candidate(trace_file: Path, tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text(BROKEN)
    out = tmp_path / "board"
    code = cli_main(["leaderboard", "seed", str(broken), "--dataset", str(trace_file), "--replicas", "24",
                     "--groups", "4", "--nodes", "2", "--gpus", "8", "--oracle", "seed", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 1
    assert "INCORRECT: " in text and "nope" in text and "oracle (seed)" in text
    assert (out / "leaderboard.csv").is_file() and (out / "leaderboard.md").is_file()


def test_discover_and_option_errors_are_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(UserError, match="no candidate 'nonesuch'"):
        lb.discover(["nonesuch"])
    assert [p.name for p in lb.discover()][0] == "seed"
    assert cli_main(["leaderboard", "seed", "--dataset", "no-such-dataset", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    with pytest.raises(UserError, match="--oracle"):
        lb.build(lb.BoardSpec(lb.discover(["seed"]), ["x.npz"], ["holdout"], {}, oracle="greedy_snake"))


def test_repeats_keep_the_median_run_and_measure_the_spread() -> None:
    def run(mean_ms: float, median_ms: float) -> Result:
        return Result(True, metrics={"runtime_mean_s": mean_ms / 1e3, "runtime_median_s": median_ms / 1e3})

    runs = [run(5.0, 4.0), run(3.0, 2.5), run(9.0, 6.0)]
    assert lb.median_run(runs) is runs[0]  # the median mean time: its speed terms are the median ones
    assert lb.runtime_spread_ms(runs) == pytest.approx(3.5)
    assert math.isnan(lb.runtime_spread_ms(runs[:1]))
    broken = Result(False, error="nope")
    assert lb.median_run(runs + [broken]) is broken


def test_boards_default_to_holdout_for_bundled_data_and_the_whole_of_an_import(
        user_cache: Path, tmp_path: Path) -> None:
    from evaluator import traces

    traces.save_user_dataset(skewed_trace(), "mine")
    # data the search never saw: new traffic, and another router model (the generalisation test)
    assert lb.splits_of("deepseek-v3", []) == ["holdout", "holdout-model"]
    assert lb.splits_of("mine", []) == ["all"]  # the whole trace, as the published evaluators score it
    assert lb.splits_of("mine:search", []) == [""]  # the split the name gives
    assert lb.splits_of("deepseek-v3", ["search"]) == ["search"]
    board = lb.build(lb.BoardSpec(lb.discover(["seed"]), ["mine"], [], {**SMALL, "reference_calls": 0}, oracle="none",
                                  ceiling=False, repeats=1))
    assert list(board["split"]) == ["all"] and list(board["windows"]) == [3]
