"""A task's optional features are declared (evolve.task.TaskBase), never probed: a task that offers none
of them still runs a campaign, and one that declares a catalogue or a seed program gets it used."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evolve import campaign_cli
from evolve.config import Config
from evolve.errors import UserError
from evolve.proposers.factory import make_proposer
from evolve.task import Objective, Result, Task, TaskBase, TaskFactory, TaskOption

HERE = Path(__file__).resolve()
SEED = ('def guess():\n    """Start at one."""\n    # EVOLVE-BLOCK-START value\n    x = 1.0\n    # EVOLVE-BLOCK-END\n'
        '    return x\n')


class BareTask(TaskBase):
    """Only the required members: no seed program, no holdout, no catalogue."""

    name = "bare"
    entry_function = "guess"

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def problem_statement(self) -> str:
        return "Return a number close to 3 from guess()."

    def objectives(self) -> list[Objective]:
        return [Objective("score")]

    def stamp(self) -> dict[str, Any]:
        return {"evaluator_version": "bare-1", "scorer": "score"}

    def evaluate(self, program_text: str) -> Result:
        namespace: dict[str, Any] = {}
        try:
            exec(compile(program_text, "<program>", "exec"), namespace)
            value = float(namespace["guess"]())
        except Exception as exc:
            return Result.failure(f"{type(exc).__name__}: {exc}", **self.stamp())
        return Result(correct=True, scores={"score": -abs(value - 3.0)}, **self.stamp())


class CatalogueTask(BareTask):
    """Declares a seed program and a catalogue of implementations for the `value` block."""

    def __init__(self, options: dict[str, Any], seed: str = "") -> None:
        super().__init__(options)
        self.seed = seed

    def seed_program(self) -> str:
        return self.seed

    def mutation_catalogue(self) -> dict[str, list[str]]:
        return {"value": ["    x = 3.0\n", "    x = 2.5\n"]}


class NoBase:
    """A class that has the required members but neither subclasses TaskBase nor declares the features."""

    name = "nobase"
    entry_function = "guess"

    def __init__(self, options: dict[str, Any]) -> None:
        pass

    problem_statement = BareTask.problem_statement
    objectives = BareTask.objectives
    stamp = BareTask.stamp
    evaluate = BareTask.evaluate


def make_bare(options: dict[str, Any]) -> BareTask:
    return BareTask(options)


def make_seeded(options: dict[str, Any]) -> CatalogueTask:
    """A task whose seed program is the file its `seed_file` option names."""
    return CatalogueTask(options, seed=options["seed_file"])


def make_nobase(options: dict[str, Any]) -> NoBase:
    return NoBase(options)


def bare_config(tmp_path: Path, factory: str, options: dict[str, Any] | None = None, **campaign: Any) -> Config:
    """A campaign on `factory` with the toy proposer (tests/toy_task.py), which nudges the seed's numbers."""
    config = Config()
    config.update({"campaign": {"seed": 1, "max_evaluations": 6, "max_minutes": 0.0, "workers": 1, "islands": 1,
                                "out": str(tmp_path / "run"), "progress": False, **campaign},
                   "proposer": {"kind": f"{HERE.with_name('toy_task.py')}:make_proposer",
                                "options": {"fail": 0.0, "broken": 0.0, "repeat": 0.0}},
                   "task": {"factory": factory, "options": options or {}}})
    return config


def test_the_defaults_decline_every_optional_feature():
    task = BareTask({})
    assert isinstance(task, Task)
    assert task.seed_program() == "" and task.holdout() is None and task.mutation_catalogue() is None


def test_a_task_without_optional_features_runs_a_campaign(tmp_path: Path, capsys):
    seed = tmp_path / "seed.py"
    seed.write_text(SEED)
    config = bare_config(tmp_path, f"{HERE}:make_bare", seed_program=str(seed))
    summary = campaign_cli.run_campaign(config, tmp_path / "run", resuming=False)
    assert summary.evaluations == 6 and summary.seed_score == -2.0 and summary.best_score > -2.0
    assert summary.holdout == "holdout: skipped (the task declares no holdout data)"


def test_without_a_seed_program_anywhere_the_run_says_what_to_give(tmp_path: Path):
    config = bare_config(tmp_path, f"{HERE}:make_bare")
    with pytest.raises(UserError, match="the task names no seed program of its own; give one with --set "
                                        "campaign.seed_program=PATH"):
        campaign_cli.run_campaign(config, tmp_path / "run", resuming=False)
    assert not (tmp_path / "run").exists()  # nothing half-made


def test_a_task_declaring_a_seed_program_starts_from_it_and_records_it(tmp_path: Path):
    seed = tmp_path / "own_seed.py"
    seed.write_text(SEED)
    config = bare_config(tmp_path, f"{HERE}:make_seeded", {"seed_file": str(seed)})
    summary = campaign_cli.run_campaign(config, tmp_path / "run", resuming=False, holdout=False)
    assert summary.seed_score == -2.0
    assert f'seed_program = "{seed}"' in (tmp_path / "run" / "config.toml").read_text()


def test_a_declared_catalogue_reaches_the_mutator(tmp_path: Path):
    config = bare_config(tmp_path, f"{HERE}:make_bare")
    config.proposer.kind, config.proposer.options = "mutator", {}
    with_catalogue = make_proposer(config, tmp_path, CatalogueTask({}))
    assert with_catalogue.catalogue == {"value": ["    x = 3.0\n", "    x = 2.5\n"]}
    assert make_proposer(config, tmp_path, BareTask({})).catalogue == {}


def test_a_factory_result_that_is_not_a_task_names_what_it_lacks():
    with pytest.raises(UserError, match=r"not an evolve.task.Task \(it lacks seed_program, holdout, "
                                        r"mutation_catalogue\); subclass evolve.task.TaskBase"):
        campaign_cli.make_task(f"{HERE}:make_nobase", {})


def test_an_empty_factory_is_one_line_naming_the_fix():
    with pytest.raises(UserError, match=r"task.factory is empty .*\(\[task\] factory ="):
        campaign_cli.make_task("", {})


def test_print_config_lists_the_options_a_task_factory_declares(tmp_path: Path):
    config = bare_config(tmp_path, f"{HERE}:DECLARED")
    lines = campaign_cli.config_reference(config)
    assert "#   task.options.target (default 3.0): the number guess() should return" in lines
    plain = campaign_cli.config_reference(bare_config(tmp_path, f"{HERE}:make_bare"))
    assert any("declares no options" in line for line in plain)


DECLARED = TaskFactory(make_bare, options=(TaskOption("target", 3.0, "the number guess() should return"),))
