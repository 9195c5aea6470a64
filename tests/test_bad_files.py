"""A config, program or archive file a user hands over broken gives one line naming the file and what to do:
never a traceback."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from evolve.cli import main as cli_main
from tests.toy_task import toy_config

LATIN1 = "# r\xe9glage\n".encode("latin-1")  # 0xe9: not UTF-8


def one_line(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_a_config_file_that_is_not_utf8(tmp_path: Path, capsys):
    config = tmp_path / "campaign.toml"
    config.write_bytes(LATIN1 + b"[campaign]\nseed = 1\n")
    err = one_line(["run", "--config", str(config)], capsys)
    assert f"config file {config} is not UTF-8 text (byte 0xe9 at offset 3); save it as UTF-8" in err


def test_a_seed_program_that_is_not_utf8(tmp_path: Path, capsys):
    config = toy_config(tmp_path)
    seed = Path(config.campaign.seed_program)
    seed.write_bytes(LATIN1 + seed.read_bytes())
    (tmp_path / "c.toml").write_text(config.to_toml())
    err = one_line(["run", "--config", str(tmp_path / "c.toml")], capsys)
    assert f"campaign.seed_program {seed} is not UTF-8 text" in err and "save it as UTF-8" in err
    assert not (tmp_path / "run" / "archive.sqlite").exists()  # a failed start leaves no half-made run


def test_a_program_to_evaluate_that_is_not_utf8(tmp_path: Path, capsys):
    program = tmp_path / "balancer.py"
    program.write_bytes(LATIN1 + b"def rebalance_experts(*a):\n    pass\n")
    err = one_line(["evaluate", str(program)], capsys)
    assert f"program {program} is not UTF-8 text" in err


def _finished_run(tmp_path: Path) -> Path:
    config = toy_config(tmp_path, max_evaluations=20)
    (tmp_path / "c.toml").write_text(config.to_toml())
    assert cli_main(["run", "--config", str(tmp_path / "c.toml")]) == 0
    run_dir = Path(config.campaign.out)
    assert not (run_dir / "archive.sqlite-wal").exists() or (run_dir / "archive.sqlite-wal").stat().st_size == 0
    return run_dir


def test_an_archive_overwritten_with_garbage(tmp_path: Path, capsys):
    run_dir = _finished_run(tmp_path)
    archive = run_dir / "archive.sqlite"
    archive.write_bytes(b"\x00garbage\xff" * 5000)
    for argv in (["run", "--resume", str(run_dir)], ["show", str(run_dir)], ["show", str(run_dir), "--best"]):
        err = one_line(argv, capsys)
        assert f"{archive} is not a readable archive" in err and "start a new run with --out" in err


@pytest.mark.parametrize("command", [["show"], ["show", "--best"], ["run", "--resume"]])
def test_an_archive_with_a_corrupted_page(tmp_path: Path, capsys, command: list[str]):
    run_dir = _finished_run(tmp_path)
    archive = run_dir / "archive.sqlite"
    with sqlite3.connect(archive) as conn:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(archive.read_bytes())
    assert len(data) > 3 * page
    for start in range(page, len(data), page):  # every page but the first (the header and the schema)
        data[start:start + 64] = b"\xa5" * 64
    archive.write_bytes(bytes(data))
    argv = ["run", "--resume", str(run_dir)] if command[0] == "run" else ["show", str(run_dir), *command[1:]]
    err = one_line(argv, capsys)
    assert f"{archive} is not a readable archive" in err and "malformed" in err and ".recover" in err
