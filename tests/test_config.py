"""Config: defaults live in dataclasses; files and flags override; every mistake names its key."""
from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from evolve import campaign_cli
from evolve.cli import main as cli_main
from evolve.config import Config, field_help, llm_config_class, parse_value
from evolve.errors import UserError
from evolve.loading import load_object


def parse_run(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    campaign_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["run", *argv])


def test_defaults_round_trip_through_toml():
    config = Config()
    again = Config.from_dict(tomllib.loads(config.to_toml()))
    assert again.to_dict() == config.to_dict()
    assert config.campaign.seed_program == ""  # empty: the task's own seed program (Task.seed_program)
    assert config.task.factory == "evaluator.task:make_task"  # the installed EPLB plugin's default task
    assert {key for key, _, _ in field_help()} >= {"campaign.seed", "campaign.novelty_threshold", "task.options"}


@pytest.mark.parametrize(
    "data, names",
    [
        ({"campaign": {"wrokers": 3}}, ["campaign.wrokers", "did you mean 'workers'"]),
        ({"campain": {"workers": 3}}, ["[campain]", "did you mean 'campaign'"]),
        ({"campaign": {"workers": "two"}}, ["campaign.workers", "an integer"]),
        ({"campaign": {"workers": 0}}, ["campaign.workers", ">= 1"]),
        ({"campaign": {"novelty_threshold": 1.5}}, ["campaign.novelty_threshold", "<= 1.0"]),
        ({"campaign": {"selection": "roulette"}}, ["campaign.selection", "rank"]),
        ({"campaign": {"objectives": "score"}}, ["campaign.objectives", "a list"]),
        ({"campaign": {"progress": 1}}, ["campaign.progress", "true or false"]),
        ({"task": {"options": 3}}, ["task.options", "a table"]),
        ({"proposer": {"colour": "red"}}, ["proposer.colour"]),
    ],
)
def test_bad_keys_and_values_name_the_key(data, names):
    with pytest.raises(UserError) as info:
        Config.from_dict(data, source="my.toml")
    message = str(info.value)
    assert message.startswith("my.toml: ") and "\n" not in message
    for name in names:
        assert name in message


def test_numbers_widen_and_dotted_set():
    config = Config()
    config.set("campaign.max_minutes", 2)
    assert config.campaign.max_minutes == 2.0 and isinstance(config.campaign.max_minutes, float)
    config.set("task.options.dataset", "tiny")
    assert config.task.options == {"dataset": "tiny"}
    with pytest.raises(UserError, match="section.key"):
        config.set("workers", 3)
    assert parse_value("4") == 4 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value('["a", "b"]') == ["a", "b"] and parse_value("gpt-4o") == "gpt-4o"


def test_cross_field_checks():
    config = Config()
    config.proposer.kind = "oracle"
    with pytest.raises(UserError, match="proposer.kind"):
        config.check()
    config.proposer.kind = "replay"
    with pytest.raises(UserError, match="proposer.transcript"):
        config.check()
    config = Config()
    config.campaign.backend = "cloud"
    with pytest.raises(UserError, match="campaign.backend"):
        config.check()


def test_bad_toml_file_is_one_line(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("[campaign]\nworkers = \n")
    with pytest.raises(UserError, match="bad.toml is not valid TOML"):
        Config.from_file(path)
    with pytest.raises(UserError, match="does not exist"):
        Config.from_file(tmp_path / "missing.toml")


def test_flags_map_onto_fields(tmp_path: Path):
    args = parse_run(["--dataset", "tiny", "--scorer", "ratio", "--workers", "3", "--seed", "5",
                      "--max-cost", "1.5", "--out", str(tmp_path / "r"), "--set", "campaign.islands=4",
                      "--set", "proposer.options.strength=2"])
    config, run_dir, resuming = campaign_cli.build_config(args)
    assert not resuming and run_dir == tmp_path / "r"
    assert config.task.options == {"dataset": "tiny", "scorer": "ratio"}
    assert (config.campaign.workers, config.campaign.seed, config.campaign.max_cost) == (3, 5, 1.5)
    assert config.campaign.islands == 4 and config.proposer.options == {"strength": 2}


@pytest.mark.skipif(llm_config_class() is None, reason="the LLM proposer is not installed")
def test_llm_section_is_the_llm_proposers_config():
    args = parse_run(["--model", "qwen-coder", "--base-url", "http://localhost:8000/v1"])
    config, _, _ = campaign_cli.build_config(args)
    assert config.proposer.llm.models == [{"name": "qwen-coder"}]
    assert config.proposer.llm.base_url == "http://localhost:8000/v1"
    with pytest.raises(UserError, match="proposer.llm.no_such_key"):
        Config.from_dict({"proposer": {"llm": {"no_such_key": 1}}})


def test_resume_reads_the_runs_config(tmp_path: Path):
    """What a resume may change is checked against the run's record when it starts (tests/test_resume.py)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "archive.sqlite").write_bytes(b"")
    (run_dir / "config.toml").write_text(Config().to_toml())
    config, _, resuming = campaign_cli.build_config(parse_run(["--resume", str(run_dir), "--max-evaluations", "500"]))
    assert resuming and config.campaign.max_evaluations == 500
    with pytest.raises(UserError, match="drop --config"):
        campaign_cli.build_config(parse_run(["--resume", str(run_dir), "--config", "x.toml"]))
    with pytest.raises(UserError, match="holds no archive.sqlite"):
        campaign_cli.build_config(parse_run(["--resume", str(tmp_path)]))


def test_import_strings(tmp_path: Path):
    assert load_object("evolve.config:Config", "test") is Config
    plugin = tmp_path / "plugin.py"
    plugin.write_text("def make(options):\n    return options\n")
    assert load_object(f"{plugin}:make", "task.factory")({"a": 1}) == {"a": 1}
    with pytest.raises(UserError, match="task.factory: cannot import 'no_such_module'"):
        load_object("no_such_module:make", "task.factory")
    with pytest.raises(UserError, match="has no 'nothing'"):
        load_object(f"{plugin}:nothing", "task.factory")
    with pytest.raises(UserError, match="not an import string"):
        load_object("justaname", "task.factory")


def test_command_line_error_is_one_line(capsys):
    assert cli_main(["run", "--set", "campaign.wrokers=3", "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "campaign.wrokers" in err
