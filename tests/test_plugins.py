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
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert {"run", "runs", "show", "apply", "ui"} <= commands and not {"evaluate", "traces", "report"} & commands
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    assert "--dataset" not in run._option_string_actions


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
    assert [f.flag for f in eplb[0].task_flags] == ["--dataset", "--scorer"]
    assert "evaluator.results.cli" in plugins.command_modules()
