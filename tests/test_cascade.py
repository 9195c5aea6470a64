"""The evaluation cascade: a cheap first stage stops children clearly worse than their parent, or broken."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from evolve import campaign_cli
from evolve.archive import Archive
from evolve.task import Result, StagedTask
from tests.evaluator_helpers import SEED_CODE, small_task
from tests.toy_task import HERE, ToyTask, fingerprint, toy_config


class StagedToyTask(ToyTask):
    """The toy problem whose first stage scores only the first two numbers (half the data)."""

    first_stages = 0

    def evaluate_first_stage(self, program_text: str) -> Result:
        StagedToyTask.first_stages += 1
        full = self.evaluate(program_text)
        return self.first_stage_of(full) if full.correct else full

    def first_stage_of(self, result: Result) -> Result:
        if not result.correct:
            return result
        values = [float(v) for v in result.metrics["values"]]
        score = -sum((v - t) ** 2 for v, t in zip(values[:2], self.target[:2]))
        return Result(correct=True, metrics=dict(result.metrics), scores={"score": score}, **self.stamp())

    def evaluate(self, program_text: str) -> Result:
        result = super().evaluate(program_text)
        if result.correct:
            namespace: dict[str, Any] = {}
            exec(compile(program_text, "<program>", "exec"), namespace)
            result.metrics["values"] = namespace["solve"]()
        return result


def make_task(options: dict[str, Any]) -> StagedToyTask:
    return StagedToyTask(options)


def _run(tmp_path: Path, name: str, **campaign: Any) -> Path:
    config = toy_config(tmp_path, name, max_evaluations=30, **campaign)
    config.task.factory = f"{Path(__file__).resolve()}:make_task"
    config.proposer.kind = f"{HERE}:make_proposer"
    campaign_cli.run_campaign(config, Path(config.campaign.out), False, holdout=False)
    return Path(config.campaign.out) / "archive.sqlite"


def test_staged_task_is_declared_by_protocol() -> None:
    assert isinstance(StagedToyTask({}), StagedTask)
    assert not isinstance(ToyTask({}), StagedTask)


def test_first_stage_stops_worse_children_and_archives_its_decision(tmp_path: Path) -> None:
    path = _run(tmp_path, "cascade", cascade=True, cascade_tolerance=0.0)
    archive = Archive(path)
    try:
        stopped = archive.events("cascade_stopped")
        assert stopped, "some children nudge the first two numbers away from the target"
        results = [archive.result(event["program_id"]) for event in stopped]
        assert all(not r.correct and r.metrics["cascade_first_stage_passed"] == 0.0 for r in results)
        worse = [r for r in results if r.error.startswith("stopped by the first stage")]
        broken = [r for r in results if r.error == "ValueError: broken"]
        assert worse and broken and len(worse) + len(broken) == len(results)
        for r in worse:
            assert r.metrics["cascade_first_stage_value"] < r.metrics["cascade_parent_first_stage_value"]
        passed = [archive.result(pid) for pid in archive.program_ids()]
        passed = [r for r in passed if r is not None and r.metrics.get("cascade_first_stage_passed") == 1.0]
        assert passed and all(r.correct for r in passed)  # a passing child got its full evaluation
    finally:
        archive.close()
    # same seed, same archive, with the cascade in the loop
    assert fingerprint(path) == fingerprint(_run(tmp_path, "again", cascade=True, cascade_tolerance=0.0))


def test_cascade_off_evaluates_every_child_in_full(tmp_path: Path) -> None:
    before = StagedToyTask.first_stages
    archive = Archive(_run(tmp_path, "off", cascade=False))
    try:
        assert archive.events("cascade_stopped") == []
        assert StagedToyTask.first_stages == before
    finally:
        archive.close()


def test_eplb_first_stage_matches_the_full_result_on_the_same_windows(tmp_path: Path) -> None:
    task = small_task(tmp_path, first_stage_windows=2)
    assert isinstance(task, StagedTask)
    stage = task.evaluate_first_stage(SEED_CODE)
    full = task.evaluate(SEED_CODE)
    assert stage.correct and stage.metrics["windows"] == 2 and full.metrics["windows"] > 2
    seen = task.first_stage_of(full)
    assert seen.metrics["balancedness_gpu"] == stage.metrics["balancedness_gpu"]
    assert seen.scores[task.options.scorer] == stage.scores[task.options.scorer]  # balance only, on both sides
    broken = task.evaluate_first_stage(SEED_CODE.replace("return phy2log, build_log2phy",
                                                         "return phy2log[:, :1], build_log2phy"))
    assert not broken.correct and broken.error
