"""A suite: every child scored on several datasets at once, its score the mean or the worst member's."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluator.suite import SuiteTask, member_placement, parse_suite
from evaluator.task import EvalOptions, build_task
from evaluator.traces import Trace, save_npz
from evolve import campaign_cli, resume
from evolve.archive import Archive
from evolve.cli import main as cli_main
from evolve.config import Config
from evolve.errors import UserError
from evolve.members import SCORE_KEY, member_rows, members_of
from tests.evaluator_helpers import SEED_CODE, skewed_trace

FAST = {"max_windows": 3, "reference_calls": 1, "timeout_s": 30.0, "scorer": "native"}


def _two_shapes(tmp_path: Path) -> list[str]:
    """Two trace files of different shapes: 16 experts in 4 groups and 32 experts in 4 groups."""
    small = skewed_trace(steps=400, layers=4, experts=16, seed=0)
    wide = skewed_trace(steps=400, layers=3, experts=32, seed=1)
    wide.meta.update(name="wide")
    return [str(save_npz(small, tmp_path / "small.npz")), str(save_npz(wide, tmp_path / "wide.npz"))]


def _suite(tmp_path: Path, aggregate: str = "worst", **options) -> SuiteTask:
    task = build_task({"suite": _two_shapes(tmp_path), "suite_aggregate": aggregate, **FAST, **options})
    assert isinstance(task, SuiteTask)
    return task


# ---- parsing and validation --------------------------------------------------------------------------------
def test_members_parse_from_a_string_or_a_list() -> None:
    text = parse_suite(" deepseek-v3:search, qwen3-30b-a3b:holdout ,deepseek-v2-lite")
    listed = parse_suite(["deepseek-v3:search", "qwen3-30b-a3b:holdout", "deepseek-v2-lite"])
    assert text == listed
    assert [(m.dataset, m.split) for m in text] == [("deepseek-v3", "search"), ("qwen3-30b-a3b", "holdout"),
                                                   ("deepseek-v2-lite", "")]
    assert [m.spec for m in parse_suite(["traces/a.npz"])] == ["traces/a.npz"]


@pytest.mark.parametrize("options, expected", [
    ({"suite": "a:search,,b"}, "member 2 is empty"),
    ({"suite": "a:"}, "member 'a:' names no split after ':'"),
    ({"suite": ":search"}, "names no dataset"),
    ({"suite": "a:search, a:search"}, "member 'a:search' is named twice"),
    ({"suite": 7}, "task option 'suite' must be"),
    ({"suite": ["a", 3]}, "task option 'suite' must be"),
    ({"suite": "a,b", "suite_aggregate": "median"}, "task option 'suite_aggregate' must be one of mean, worst"),
    ({"suite": "a,b", "split": "holdout"}, "'split' ('holdout') does not apply with a suite"),
    ({"suite": "a,b", "dataset": "qwen3-30b-a3b"}, "'dataset' ('qwen3-30b-a3b') does not apply with a suite"),
    ({"suites": "a,b"}, "unknown task option 'suites' (did you mean 'suite'?)"),
])
def test_bad_suite_options_fail_in_one_line(options: dict, expected: str) -> None:
    with pytest.raises(UserError) as caught:
        EvalOptions.from_dict(options)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_a_member_that_does_not_load_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^suite member 'nosuch:search': unknown dataset 'nosuch'"):
        build_task({"suite": [_two_shapes(tmp_path)[0], "nosuch:search"]})
    with pytest.raises(UserError, match="scores several datasets"):
        from evaluator.task import EplbTask
        EplbTask(EvalOptions(suite="deepseek-v3:search"))


def test_each_member_gets_a_placement_for_its_shape() -> None:
    def trace(experts: int) -> Trace:
        return Trace(np.ones((2, 2, experts), dtype=np.int64), {"num_groups": 8})

    standard = EvalOptions()
    assert member_placement(trace(256), standard) == {"num_replicas": 288, "num_gpus": 32, "num_nodes": 4}
    assert member_placement(trace(128), standard) == {"num_replicas": 144, "num_gpus": 16, "num_nodes": 2}
    assert member_placement(trace(64), standard) == {"num_replicas": 72, "num_gpus": 8, "num_nodes": 1}
    given = EvalOptions(num_replicas=320)  # set by the user: every member uses it as given
    assert member_placement(trace(128), given) == {"num_replicas": 320, "num_gpus": 32, "num_nodes": 4}


# ---- scores -------------------------------------------------------------------------------------------------
def test_aggregate_is_the_mean_or_the_worst_member(tmp_path: Path) -> None:
    worst = _suite(tmp_path, "worst")
    assert [m.args for m in worst.members] == [(18, 4, 1, 2), (36, 4, 1, 4)]  # scaled to 16 and 32 experts
    members = worst.evaluate_members(SEED_CODE)
    total = worst.combine(members)
    assert total.correct, total.error
    values = [r.scores["native"] for r in members]
    assert values[0] != values[1]
    assert total.score == pytest.approx(min(values))
    mean = SuiteTask(EvalOptions(suite=worst.options.suite, suite_aggregate="mean", **FAST), worst.members)
    assert mean.combine(members).score == pytest.approx(np.mean(values))
    per_member = members_of(total.metrics)
    assert list(per_member) == worst.labels == ["skewed-0:all", "wide:all"]
    assert per_member["wide:all"]["balancedness_gpu"] == members[1].metrics["balancedness_gpu"]
    assert per_member["skewed-0:all"][SCORE_KEY + "native"] == values[0]
    assert "weakest:" in total.feedback


def test_a_program_great_on_one_member_and_bad_on_another_loses_under_worst(tmp_path: Path) -> None:
    """The seed everywhere vs a program that is the seed on 16 experts but packs experts in order, no
    replication spread, on 32; and one that raises on 32 experts."""
    fitted = SEED_CODE + (
        "\n\n_seed = rebalance_experts\n\n"
        "def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):\n"
        "    if weight.shape[-1] == 16:\n"
        "        return _seed(weight, num_replicas, num_groups, num_nodes, num_gpus)\n"
        "    layers, experts = weight.shape\n"
        "    slots = torch.arange(num_replicas) % experts\n"
        "    phy2log = slots.expand(layers, -1).contiguous()\n"
        "    logcnt = torch.bincount(slots, minlength=experts).expand(layers, -1).contiguous()\n"
        "    log2phy = torch.full((layers, experts, int(logcnt.max())), -1, dtype=torch.int64)\n"
        "    for e in range(experts):\n"
        "        where = (slots == e).nonzero().flatten()\n"
        "        log2phy[:, e, : where.numel()] = where\n"
        "    return phy2log, log2phy, logcnt\n"
    )
    broken = SEED_CODE + (
        "\n\n_seed = rebalance_experts\n\n"
        "def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):\n"
        "    if weight.shape[-1] != 16:\n"
        "        raise ValueError('only tuned for 16 experts')\n"
        "    return _seed(weight, num_replicas, num_groups, num_nodes, num_gpus)\n"
    )
    task = _suite(tmp_path, "worst")
    seed_members = task.evaluate_members(SEED_CODE)
    fitted_members = task.evaluate_members(fitted)
    assert fitted_members[0].scores["native"] == pytest.approx(seed_members[0].scores["native"])  # as good there
    assert fitted_members[1].scores["native"] < seed_members[1].scores["native"] - 0.05  # clearly worse here
    seed, fit = task.combine(seed_members), task.combine(fitted_members)
    assert fit.score < seed.score
    failed = task.evaluate(broken)
    assert not failed.correct and failed.error.startswith("suite member wide:all:") and failed.score is None


def test_the_cascade_first_stage_covers_every_member(tmp_path: Path) -> None:
    task = _suite(tmp_path, "mean", first_stage_windows=1)
    full = task.evaluate(SEED_CODE)
    stage = task.evaluate_first_stage(SEED_CODE)
    seen = task.first_stage_of(full)
    assert stage.correct and seen.correct
    assert list(members_of(stage.metrics)) == task.labels
    for label in task.labels:  # the parent's side equals a fresh first stage on each member (balance is exact)
        assert members_of(seen.metrics)[label]["balancedness_gpu"] == pytest.approx(
            members_of(stage.metrics)[label]["balancedness_gpu"])
    assert seen.scores["native"] == pytest.approx(stage.scores["native"])
    assert all(m["windows"] == 1.0 for m in members_of(stage.metrics).values())


def test_the_stamp_makes_the_suite_a_score_changing_key(tmp_path: Path) -> None:
    paths = _two_shapes(tmp_path)
    as_list = build_task({"suite": paths, **FAST}).stamp()
    as_text = build_task({"suite": ",".join(paths), **FAST}).stamp()
    assert resume.stamp_changes(as_list, as_text) == []  # the same suite written either way
    worst = build_task({"suite": paths, "suite_aggregate": "worst", **FAST}).stamp()
    keys = {c.key for c in resume.stamp_changes(as_list, worst)}
    assert "task.options.suite_aggregate" in keys
    one = build_task({"suite": paths[:1], **FAST}).stamp()
    assert "task.options.suite" in {c.key for c in resume.stamp_changes(as_list, one)}


# ---- a campaign, show and evaluate ------------------------------------------------------------------------
def test_a_tiny_suite_campaign_keeps_every_member_in_the_archive(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config()
    config.update({
        "campaign": {"seed": 3, "max_evaluations": 3, "max_minutes": 0.0, "workers": 1, "islands": 1,
                     "progress": False, "cascade": True, "out": str(tmp_path / "run")},
        "proposer": {"kind": "mutator"},
        "task": {"options": {"suite": _two_shapes(tmp_path), "suite_aggregate": "worst", **FAST}},
    })
    campaign_cli.run_campaign(config, tmp_path / "run", False, holdout=False)
    archive = Archive(tmp_path / "run" / "archive.sqlite")
    try:
        results = [r for pid in archive.program_ids() if (r := archive.result(pid)) is not None and r.correct]
        assert len(results) >= 2
        for r in results:
            members = members_of(r.metrics)
            assert list(members) == ["skewed-0:all", "wide:all"]
            values = [m[SCORE_KEY + "native"] for m in members.values()]
            assert r.score == pytest.approx(min(values))
            assert r.metrics["suite_score_mean"] == pytest.approx(np.mean(values))
            assert r.metrics["balancedness_gpu"] == pytest.approx(
                np.mean([m["balancedness_gpu"] for m in members.values()]))
    finally:
        archive.close()
    capsys.readouterr()
    assert cli_main(["show", str(tmp_path / "run")]) == 0
    shown = capsys.readouterr().out
    assert "per member (native):" in shown and "wide:all" in shown and "aggregate" in shown
    assert cli_main(["report", str(tmp_path / "run"), "--no-evaluate"]) == 0
    summary = json.loads((tmp_path / "run" / "report" / "summary.json").read_text())
    assert [row["member"] for row in summary["members"]] == ["skewed-0:all", "wide:all"]
    seed_row = summary["members"][1]
    assert seed_row["seed"] == pytest.approx(seed_result_member(tmp_path / "run", "wide:all"))
    assert "Per suite member: seed and best" in (tmp_path / "run" / "report" / "report.html").read_text()


def seed_result_member(run: Path, label: str) -> float:
    """The seed's archived native score on one member."""
    archive = Archive(run / "archive.sqlite")
    try:
        seed = next(s.program_id for s in archive.steps() if s.kind == "seed")
        return members_of(archive.result(seed).metrics)[label][SCORE_KEY + "native"]
    finally:
        archive.close()


def test_evaluate_prints_each_member_and_the_aggregate(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    paths = _two_shapes(tmp_path)
    args = ["evaluate", "seed", "--suite", ",".join(paths), "--suite-aggregate", "worst", "--max-windows", "3",
            "--scorer", "native"]
    capsys.readouterr()
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    assert "== suite member skewed-0:all" in text and "== suite member wide:all" in text
    assert "suite (worst of 2 members, scorer native)" in text
    assert cli_main(args + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    members = data["suite"]["members"]
    assert [m["member"] for m in members] == ["skewed-0:all", "wide:all"]
    assert data["scores"]["native"] == pytest.approx(min(m["scores"]["native"] for m in members))
    assert members[1]["settings"]["num_replicas"] == 36


def test_member_rows_compare_seed_and_best() -> None:
    from evolve.task import Result

    def result(a: float, b: float) -> Result:
        return Result(correct=True, metrics={f"suite/x:s/{SCORE_KEY}native": a, f"suite/y:s/{SCORE_KEY}native": b},
                      scores={"native": min(a, b)}, scorer="native")

    rows = member_rows(result(0.5, 0.7), result(0.6, 0.65), "native")
    assert [(r["member"], r["change"]) for r in rows] == [("x:s", pytest.approx(0.1)), ("y:s", pytest.approx(-0.05))]
    assert member_rows(Result(correct=True, metrics={"a": 1.0}), None, "native") == []
