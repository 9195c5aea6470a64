"""evolve knows no problem: an application plugs its commands, default task and task flags in through
the `evolve.plugins` entry-point group (here: the EPLB evaluator, as pyproject.toml declares it)."""
from __future__ import annotations

from evolve import plugins
from evolve.cli import build_parser
from evolve.config import Config
from evolve.plugins import Plugin, TaskFlag

FAKE = Plugin(name="fake", first_commands=("fake.first",), commands=("fake.later",), task_factory="fake:make",
              task_flags=(TaskFlag("--colour", "colour", "task option: colour"),))


def test_command_modules_put_evolve_commands_between_a_plugins_own():
    assert plugins.command_modules(()) == [*plugins.EVOLVE_COMMANDS, *plugins.LAST_COMMANDS]
    assert plugins.command_modules((FAKE,)) == ["fake.first", *plugins.EVOLVE_COMMANDS, "fake.later",
                                                *plugins.LAST_COMMANDS]


def test_without_a_plugin_evolve_has_its_own_commands_and_no_default_task(monkeypatch):
    monkeypatch.setattr(plugins, "installed", lambda: ())
    assert Config().task.factory == ""
    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"run", "runs", "show", "apply", "report", "ui"} <= set(choices)
    assert not {"evaluate", "traces", "leaderboard"} & set(choices)
    assert "--dataset" not in choices["run"]._option_string_actions
    assert "--references" not in choices["report"]._option_string_actions  # EPLB's report flag comes with EPLB


def test_a_plugins_flags_set_its_task_options(monkeypatch):
    monkeypatch.setattr(plugins, "installed", lambda: (FAKE,))
    monkeypatch.setattr(plugins, "command_modules", lambda: [*plugins.EVOLVE_COMMANDS])
    from evolve.campaign_cli import build_config

    assert Config().task.factory == "fake:make"
    args = build_parser().parse_args(["run", "--colour", "red", "--out", "somewhere"])
    config, _, _ = build_config(args)
    assert config.task.options == {"colour": "red"}


def test_the_eplb_evaluator_is_the_installed_plugin():
    eplb = [p for p in plugins.installed() if p.name == "eplb"]
    assert eplb and eplb[0].task_factory == "evaluator.task:make_task"
    assert [f.flag for f in eplb[0].task_flags] == ["--dataset", "--scorer", "--suite", "--suite-aggregate"]
    assert "evaluator.results.cli" in plugins.command_modules()
    assert eplb[0].report_extension == "evaluator.results.cli:REPORT"


def test_report_draws_any_run_from_its_archive_without_a_plugin(tmp_path, monkeypatch, capsys):
    from evolve.campaign_cli import run_campaign
    from evolve.cli import main
    from tests.toy_task import toy_config

    config = toy_config(tmp_path, max_evaluations=6)
    run_campaign(config, tmp_path / "run", resuming=False, holdout=False)
    monkeypatch.setattr(plugins, "installed", lambda: ())
    assert main(["report", str(tmp_path / "run")]) == 0
    assert f"report: {(tmp_path / 'run' / 'report' / 'report.html').resolve()}" in capsys.readouterr().out
    page = (tmp_path / "run" / "report" / "report.html").read_text()
    assert "toy" in page and "Leaderboard" not in page
    assert (tmp_path / "run" / "report" / "progress.png").is_file()
