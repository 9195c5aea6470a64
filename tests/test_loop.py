"""The campaign loop on the toy problem: reproducibility, kill -9 and resume, budgets, novelty, islands."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolve import campaign_cli
from evolve.archive import Archive
from evolve.backends import BackendContext, LocalBackend, make_backend
from evolve.cli import main as cli_main
from evolve.config import Config
from evolve.errors import UserError
from evolve.loop import Summary
from tests.toy_task import SEED, ToyTask, fingerprint, toy_config

ROOT = Path(__file__).resolve().parents[1]


def run(config: Config, resume: bool = False) -> Summary:
    return campaign_cli.run_campaign(config, Path(config.campaign.out), resume, holdout=False)


def open_archive(config: Config) -> Archive:
    return Archive(Path(config.campaign.out) / "archive.sqlite")


def kinds(archive: Archive) -> list[str]:
    return [s.kind for s in archive.steps()]


@pytest.mark.parametrize("workers, proposers", [(1, 1), (3, 2)])
def test_same_seed_same_archive(tmp_path: Path, workers: int, proposers: int):
    prints = []
    for name in ("first", "second"):
        config = toy_config(tmp_path, name, workers=workers, proposers=proposers, max_evaluations=30)
        config.task.options["delay"] = 0.01  # random sleeps: threads finish in a different order each run
        run(config)
        prints.append(fingerprint(Path(config.campaign.out) / "archive.sqlite"))
    assert prints[0] == prints[1]
    assert len(prints[0]["versions"]) > 1  # the search did improve on the seed
    assert {kind for _, kind, *_ in prints[0]["steps"]} >= {"seed", "evaluated", "failed", "rejected"}


def _steps_in(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def test_kill_9_then_resume_loses_nothing_and_matches_an_uninterrupted_run(tmp_path: Path):
    config = toy_config(tmp_path, "killed", workers=2, max_evaluations=40)
    config.task.options["delay"] = 0.05
    config_file = tmp_path / "campaign.toml"
    config_file.write_text(config.to_toml())
    archive_path = tmp_path / "killed" / "archive.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "evolve.cli", "run", "--config", str(config_file)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        give_up = time.monotonic() + 120  # a hang guard, not a timing assertion
        while _steps_in(archive_path) < 12:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < give_up, "the campaign made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    killed = Archive(archive_path)
    assert killed.check_integrity() == []
    assert killed.events("run_finished") == []  # it really was cut off mid-run
    before = fingerprint(archive_path)
    killed.close()

    assert cli_main(["run", "--resume", str(tmp_path / "killed")]) == 0
    after = fingerprint(archive_path)
    assert set(before["programs"]) <= set(after["programs"])  # nothing evaluated before the kill is lost
    assert after["steps"][: len(before["steps"])] == before["steps"]
    assert Archive(archive_path).check_integrity() == []

    reference = toy_config(tmp_path, "uninterrupted", workers=2, max_evaluations=40)
    run(reference)
    assert after == fingerprint(tmp_path / "uninterrupted" / "archive.sqlite")


def test_ctrl_c_saves_work_and_says_how_to_continue(tmp_path: Path):
    config = toy_config(tmp_path, "interrupted", workers=2, max_evaluations=40)
    config.task.options["delay"] = 0.05
    config_file = tmp_path / "campaign.toml"
    config_file.write_text(config.to_toml())
    archive_path = tmp_path / "interrupted" / "archive.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "evolve.cli", "run", "--config", str(config_file)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    give_up = time.monotonic() + 120
    while _steps_in(archive_path) < 5 and time.monotonic() < give_up and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate()
    assert proc.returncode == 130
    assert err.decode().strip().splitlines()[-1].startswith("interrupted; finished work is saved; continue with")
    assert Archive(archive_path).check_integrity() == []
    assert cli_main(["run", "--resume", str(tmp_path / "interrupted")]) == 0


def test_resume_with_a_larger_budget_continues(tmp_path: Path):
    config = toy_config(tmp_path, max_evaluations=10)
    run(config)
    config.campaign.max_evaluations = 25
    summary = run(config, resume=True)
    archive = open_archive(config)
    assert summary.evaluations == 25 == kinds(archive).count("evaluated")
    assert archive.check_integrity() == [] and len(archive.events("run_resumed")) == 1


@pytest.mark.parametrize(
    "campaign, proposer, reason",
    [
        ({"max_evaluations": 12}, {}, "evaluation budget reached (12 of 12)"),
        ({"max_cost": 0.55}, {"cost": 0.1}, "cost budget reached"),
        ({"max_tokens": 1000}, {}, "token budget reached"),
        ({}, {"exhaust_after": 5}, "the proposer reported its budget exhausted"),
        ({"max_failed_proposals": 6}, {"fail_after": 5},
         "proposals in a row gave nothing to evaluate (campaign.max_failed_proposals is 6"),
        ({}, {"fail": 1.0}, "proposals all failed (last: SEARCH block 1 does not match the parent)"),
        ({"max_minutes": 1e-4}, {}, "time budget reached"),
    ],
)
def test_budgets_end_the_run_cleanly(tmp_path: Path, campaign, proposer, reason):
    config = toy_config(tmp_path, **{"max_evaluations": 1000, **campaign})
    config.proposer.options.update(proposer)
    if "max_minutes" in campaign:
        config.task.options["delay"] = 0.05
    summary = run(config)
    assert reason in summary.reason
    archive = open_archive(config)
    assert archive.check_integrity() == []
    depth = config.campaign.workers + config.campaign.proposers
    steps = archive.steps()
    if "max_cost" in campaign:
        assert 0.55 <= sum(s.cost for s in steps) <= 0.55 + depth * 0.1 + 1e-9
    if "exhaust_after" in proposer:
        assert len(steps) - 1 <= 5 + depth
    assert archive.events("run_finished")[-1]["detail"]["reason"] == summary.reason


def test_novelty_rejects_rewordings_before_evaluation(tmp_path: Path):
    config = toy_config(tmp_path, max_failed_proposals=5)
    config.proposer.options.update({"fail": 0.0, "broken": 0.0, "repeat": 1.0})
    summary = run(config)
    archive = open_archive(config)
    assert kinds(archive)[1:] and set(kinds(archive)[1:]) == {"rejected"}
    assert summary.evaluations == 0 and archive.conn.execute("SELECT COUNT(*) FROM programs").fetchone()[0] == 1
    assert len(archive.events("rejected")) == len(kinds(archive)) - 1


def test_near_duplicate_threshold(tmp_path: Path):
    config = toy_config(tmp_path, novelty_threshold=0.9, max_evaluations=10, max_failed_proposals=50)
    run(config)
    errors = [s.error for s in open_archive(config).steps() if s.kind == "rejected"]
    assert any("nearly identical" in e and "similarity 0.9" in e for e in errors)


def test_islands_migrate_and_pareto_selection_runs(tmp_path: Path):
    config = toy_config(tmp_path, islands=3, migration_interval=4, objectives=["score", "runtime_s"], elite_size=3)
    run(config)
    archive = open_archive(config)
    assert archive.events("migration")
    migrated = archive.conn.execute("SELECT COUNT(*) FROM members WHERE via = 'migration'").fetchone()[0]
    assert migrated > 0
    seeds = archive.conn.execute("SELECT COUNT(*) FROM members WHERE via = 'seed'").fetchone()[0]
    assert seeds == 3  # the seed starts on every island
    assert archive.check_integrity() == []


def test_bad_objective_name_fails_before_any_work(tmp_path: Path):
    config = toy_config(tmp_path, objectives=["score", "speed"])
    with pytest.raises(UserError, match="campaign.objectives: 'speed'.*score, size, runtime_s"):
        run(config)
    assert not (tmp_path / "run").exists()


def test_incorrect_seed_and_task_bugs_are_one_line_errors(tmp_path: Path):
    config = toy_config(tmp_path)
    Path(config.campaign.seed_program).write_text("def solve():\n    return 1\n")
    with pytest.raises(UserError, match="the seed program is incorrect: solve.. must return a list"):
        run(config)
    Path(config.campaign.seed_program).write_text(SEED)
    assert run(config, resume=True).evaluations == config.campaign.max_evaluations  # fixed seed: resume works

    buggy = toy_config(tmp_path, "buggy", max_evaluations=40)
    buggy.task.options["raise_on"] = "1.0"
    with pytest.raises(UserError, match="the task's evaluate raised RuntimeError: toy evaluator bug"):
        run(buggy)
    archive = open_archive(buggy)
    assert archive.check_integrity() == [] and len(archive.steps()) > 1


def test_run_directory_rules(tmp_path: Path):
    config = toy_config(tmp_path, max_evaluations=3)
    run(config)
    args = argparse_run(["--config", str(_write(tmp_path, config)), "--out", config.campaign.out])
    with pytest.raises(UserError, match="already holds a run; continue it with --resume"):
        campaign_cli.build_config(args)
    with campaign_cli._locked(Path(config.campaign.out)):
        with pytest.raises(UserError, match="in use by another eplb-evolve process"):
            run(config, resume=True)
    (Path(config.campaign.out) / "best").joinpath("v001_seed.py").unlink()
    run(config, resume=True)  # a resumed run writes the best files a crash left out
    assert (Path(config.campaign.out) / "best" / "v001_seed.py").exists()


def test_show_runs_and_holdout(tmp_path: Path, capsys, monkeypatch):
    config = toy_config(tmp_path, max_evaluations=15)
    summary = campaign_cli.run_campaign(config, Path(config.campaign.out), False)
    assert summary.holdout.startswith("holdout: best ")
    assert cli_main(["show", config.campaign.out, "--best"]) == 0
    out = capsys.readouterr().out
    assert "seed" in out.splitlines()[1] and summary.best_id[:12] in out
    assert cli_main(["show", config.campaign.out]) == 0
    assert "v001" in capsys.readouterr().out
    assert cli_main(["show", config.campaign.out, "--lineage", "nope"]) == 2
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r1").symlink_to(Path(config.campaign.out))
    assert cli_main(["runs"]) == 0
    assert "r1" in capsys.readouterr().out


def test_backends_by_name(tmp_path: Path):
    task = ToyTask({})
    backend = make_backend("local", BackendContext(task, workers=2))
    assert isinstance(backend, LocalBackend)
    assert backend.submit(SEED).result().correct
    backend.close()
    with pytest.raises(UserError, match="campaign|backend"):
        make_backend("nowhere:Backend", BackendContext(task, workers=1))


def argparse_run(argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser()
    campaign_cli.register(parser.add_subparsers())
    return parser.parse_args(["run", *argv])


def _write(tmp_path: Path, config: Config) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml())
    return path


def test_a_proposer_user_error_ends_the_run_with_that_line_and_keeps_the_work(tmp_path: Path):
    config = toy_config(tmp_path, max_evaluations=30)
    config.proposer.options["user_error_after"] = 6
    with pytest.raises(UserError, match="transcript has no reply for generation 3.*--resume"):
        run(config)
    archive = open_archive(config)
    assert archive.check_integrity() == []
    assert "evaluated" in kinds(archive)  # what finished before the error is in the archive
