"""`eplb-evolve run --resume` checks its config: budgets may change and the run continues; a change that
alters scores or the lineage is refused in one line naming each key and both values, unless allowed with
`--allow-config-change`, which the run records and `show` lists."""
from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w

from evaluator.traces import save_npz
from evolve.archive import Archive
from evolve.cli import main as cli_main
from tests.evaluator_helpers import SMALL, skewed_trace
from tests.toy_task import toy_config


def start(tmp_path: Path, **campaign) -> Path:
    config = toy_config(tmp_path, **{"max_evaluations": 4, **campaign})
    config_file = tmp_path / "campaign.toml"
    config_file.write_text(config.to_toml())
    assert cli_main(["run", "--config", str(config_file)]) == 0
    return Path(config.campaign.out)


def evaluated(run_dir: Path) -> int:
    archive = Archive(run_dir / "archive.sqlite")
    try:
        return sum(s.kind == "evaluated" for s in archive.steps())
    finally:
        archive.close()


def refused(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_a_larger_budget_continues_the_run(tmp_path: Path):
    run_dir = start(tmp_path)
    assert evaluated(run_dir) == 4
    assert cli_main(["run", "--resume", str(run_dir), "--max-evaluations", "9", "--set", "campaign.max_minutes=5",
                     "--workers", "2"]) == 0
    assert evaluated(run_dir) == 9
    archive = Archive(run_dir / "archive.sqlite")
    assert archive.meta("config_changes") is None and archive.check_integrity() == []


def test_lineage_and_score_keys_are_refused_with_both_values(tmp_path: Path, capsys):
    run_dir = start(tmp_path)
    err = refused(["run", "--resume", str(run_dir), "--seed", "9", "--set", 'campaign.objectives=["score", "size"]'],
                  capsys)
    assert "campaign.seed was 7, now 9" in err
    assert 'campaign.objectives was [], now ["score", "size"]' in err
    assert "--allow-config-change campaign.seed" in err and "--allow-config-change campaign.objectives" in err
    assert evaluated(run_dir) == 4  # nothing ran


def test_an_edited_config_file_is_checked_against_the_archive(tmp_path: Path, capsys):
    run_dir = start(tmp_path)
    saved = run_dir / "config.toml"
    data = tomllib.loads(saved.read_text())
    data["campaign"]["elite_size"] = 2
    saved.write_text(tomli_w.dumps(data))
    err = refused(["run", "--resume", str(run_dir)], capsys)
    assert "campaign.elite_size was 4, now 2" in err


def test_an_allowed_change_is_recorded_and_shown(tmp_path: Path, capsys):
    run_dir = start(tmp_path)
    assert cli_main(["run", "--resume", str(run_dir), "--seed", "9", "--max-evaluations", "6",
                     "--allow-config-change", "campaign.seed"]) == 0
    assert evaluated(run_dir) == 6
    archive = Archive(run_dir / "archive.sqlite")
    changes = archive.meta("config_changes")
    assert ([(c["key"], c["old"], c["new"], c["allowed_by"]) for c in changes]
            == [("campaign.seed", 7, 9, "campaign.seed")])
    assert [e["detail"]["key"] for e in archive.events("config_change")] == ["campaign.seed"]
    archive.close()
    capsys.readouterr()
    assert cli_main(["show", str(run_dir)]) == 0
    assert "config changed on resume" in capsys.readouterr().out
    # the next resume compares with the new value: no further override needed
    assert cli_main(["run", "--resume", str(run_dir), "--max-evaluations", "7"]) == 0


def test_task_changes_are_judged_by_the_task_stamp(tmp_path: Path, capsys):
    run_dir = start(tmp_path)
    # `delay` is not in the toy task's stamp: it does not alter scores
    assert cli_main(["run", "--resume", str(run_dir), "--set", "task.options.delay=0.001",
                     "--max-evaluations", "5"]) == 0
    err = refused(["run", "--resume", str(run_dir), "--seed", "8", "--set", "task.options.split=holdout"], capsys)
    assert "task.dataset.split was 'search', now 'holdout'" in err and "task.dataset.sha256 was" in err
    assert "campaign.seed was 7, now 8" in err  # one line names every refused key
    assert cli_main(["run", "--resume", str(run_dir), "--set", "task.options.split=holdout", "--max-evaluations", "6",
                     "--allow-config-change", "task.dataset"]) == 0
    archive = Archive(run_dir / "archive.sqlite")
    assert {c["key"] for c in archive.meta("config_changes")} == {"task.dataset.split", "task.dataset.sha256"}


def test_bad_override_keys_are_one_line(tmp_path: Path, capsys):
    run_dir = start(tmp_path)
    err = refused(["run", "--resume", str(run_dir), "--allow-config-change", "campaign.sed"], capsys)
    assert "--allow-config-change campaign.sed: no such" in err
    err = refused(["run", "--config", str(tmp_path / "campaign.toml"), "--out", str(tmp_path / "new"),
                   "--allow-config-change", "campaign.seed"], capsys)
    assert "only applies to --resume" in err


def test_eplb_options_that_alter_scores_are_refused_and_run_options_are_not(tmp_path: Path, capsys):
    trace = save_npz(skewed_trace(), tmp_path / "small.npz")
    run_dir = tmp_path / "eplb"
    sets = [f"task.options.{k}={v}" for k, v in {**SMALL, "max_windows": 2, "timeout_s": 20.0}.items()]
    argv = ["run", "--dataset", str(trace), "--max-evaluations", "1", "--workers", "1", "--out", str(run_dir),
            "--set", "campaign.progress=false"] + [x for s in sets for x in ("--set", s)]
    assert cli_main(argv) == 0
    err = refused(["run", "--resume", str(run_dir), "--set", "task.options.window=50"], capsys)
    assert "task.options.window was 100, now 50" in err
    assert cli_main(["run", "--resume", str(run_dir), "--set", "task.options.timeout_s=30", "--set",
                     "task.options.threads=1", "--max-evaluations", "2"]) == 0
    assert evaluated(run_dir) == 2


def test_a_run_stamped_by_an_older_version_compares_every_task_option(tmp_path: Path, capsys):
    run_dir = start(tmp_path)
    archive = Archive(run_dir / "archive.sqlite")
    stamp = archive.meta("task_stamp")
    del stamp["scorer"]  # as if written before the task stamped its scorer
    archive.set_meta(task_stamp=stamp)
    archive.close()
    err = refused(["run", "--resume", str(run_dir), "--set", "task.options.delay=0.001"], capsys)
    assert "task.options.delay was (not set), now 0.001" in err
    assert cli_main(["run", "--resume", str(run_dir), "--max-evaluations", "5"]) == 0  # no change: resumes
