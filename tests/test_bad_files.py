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


# --- hostile trace files: every one is refused with one line naming the file and the problem --------------

def _npz(path: Path, **arrays) -> Path:
    """An .npz written as an attacker would: any arrays, the metadata given as JSON text (or left out)."""
    import json

    import numpy as np

    meta = arrays.pop("meta", {"num_groups": 4})
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    return path


def _counts(dtype="int64", value=3):
    import numpy as np

    return np.full((300, 4, 16), value, dtype=dtype)


def _routes(ids=None, steps=None):
    import numpy as np

    routes = np.tile(np.arange(4, dtype=np.int16), (60, 4, 1)) if ids is None else ids
    return {"routes": routes, "route_steps": np.arange(60, dtype=np.int64) * 5 if steps is None else steps}


def _hostile_traces():
    import numpy as np

    r = _routes()
    return {
        "text counts": ({"counts": _counts("<U1", "1")}, "trace counts must be whole numbers, found <U1 values"),
        "record counts": ({"counts": np.zeros((300, 4, 16), dtype=[("a", "<i8")])}, "found [('a', '<i8')] values"),
        "boolean counts": ({"counts": _counts(bool, True)}, "found bool values"),
        "complex counts": ({"counts": _counts(complex, 1 + 1j)}, "found complex128 values"),
        # 2**64 - 1 read as int64 is -1; 2**62 summed over a window wraps: both were scored silently
        "counts past int64": ({"counts": _counts(np.uint64, 2**64 - 1)}, "could sum past 2**53"),
        "counts that overflow a window": ({"counts": _counts(np.int64, 2**62)}, "could sum past 2**53"),
        # the balancer, not the file, was blamed for these
        "no experts": ({"counts": np.zeros((300, 4, 0), np.int64)}, "at least one layer and one expert"),
        "no layers": ({"counts": np.zeros((300, 0, 16), np.int64)}, "at least one layer and one expert"),
        "checksum not a string": ({"counts": _counts(), "meta": {"num_groups": 4, "sha256": 5}},
                                  "metadata's 'sha256' must be a string, found 5"),
        "groups not a number": ({"counts": _counts(), "meta": {"num_groups": "eight"}},
                                "metadata's 'num_groups' must be a whole number or null"),
        "groups a boolean": ({"counts": _counts(), "meta": {"num_groups": True}}, "'num_groups' must be a whole"),
        "model not an object": ({"counts": _counts(), "meta": {"model": "x"}}, "'model' must be an object or null"),
        "model groups not a number": ({"counts": _counts(), "meta": {"model": {"num_groups": [8]}}},
                                      "'model.num_groups' must be a whole number"),
        "top-k too large": ({"counts": _counts(), "meta": {"num_groups": 4, "top_k": 10**30}}, "in [0, 2**31]"),
        "metadata a list": ({"counts": _counts(), "meta": ["x"]}, "metadata must be a JSON object, found list"),
        "pickled object": ({"counts": np.array([1, "x"], dtype=object)}, "Object arrays cannot be loaded"),
        "routes without steps": ({"counts": _counts(), "routes": r["routes"]}, "need both 'routes' and 'route_steps'"),
        "negative route ids": ({"counts": _counts(), **_routes(ids=-np.ones((60, 4, 4), np.int64))},
                               "expert id -1 of sampled token 0"),
        "route ids out of range": ({"counts": _counts(), **_routes(ids=np.full((60, 4, 1), 16, np.int64))},
                                   "expert id 16 of sampled token 0, layer 0 is outside [0, 16)"),
        "float route ids": ({"counts": _counts(), **_routes(ids=r["routes"].astype(float))},
                            "routes must be whole numbers, found float64"),
        "steps going back": ({"counts": _counts(), **_routes(steps=r["route_steps"][::-1].copy())},
                             "route_steps must not decrease"),
        "steps past the trace": ({"counts": _counts(), **_routes(steps=r["route_steps"] + 300)},
                                 "outside [0, 300)"),
        "steps of another shape": ({"counts": _counts(), **_routes(steps=r["route_steps"][:-1])},
                                   "one step per sampled token (60)"),
        # int16 storage wrapped ids past 32767 to negative ones (then blamed on 'out of range' ids)
        "route ids past int16": ({"counts": np.ones((100, 1, 40000), np.int32),
                                  **_routes(ids=np.full((2, 1, 1), 39999), steps=np.zeros(2, np.int64))},
                                 "at most 32768 experts, not 40000"),
    }


HOSTILE_TRACES = _hostile_traces()


@pytest.mark.parametrize("name", list(HOSTILE_TRACES))
def test_a_hostile_trace_file_is_one_line(tmp_path: Path, capsys, name: str):
    arrays, expected = HOSTILE_TRACES[name]
    path = _npz(tmp_path / "hostile.npz", **dict(arrays))
    err = one_line(["evaluate", "--dataset", str(path), "--replicas", "24", "--gpus", "8", "--nodes", "2", "seed"],
                   capsys)
    assert err.startswith(f"error: {path}: ") and expected in err, err


def test_a_zip_bomb_trace_is_refused_before_it_is_decompressed(tmp_path: Path, capsys,
                                                               monkeypatch: pytest.MonkeyPatch):
    """A few KB of deflated zeros can declare gigabytes; the zip directory's sizes are checked first."""
    import numpy as np

    from evaluator.traces import trace

    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, counts=np.zeros((1000, 16, 64), np.int64), meta=np.array('{"num_groups": 4}'))
    assert path.stat().st_size < 100_000  # 8 MB of counts
    monkeypatch.setattr(trace, "max_trace_bytes", lambda: 2**20)  # as if this machine had 8 MB
    loaded = []
    monkeypatch.setattr(trace.Trace, "__post_init__", lambda self: loaded.append(self))
    err = one_line(["evaluate", "--dataset", str(path), "seed"], capsys)
    assert err.startswith(f"error: {path}: its arrays take 7.8 MiB once decompressed, more than this machine can "
                          "load (1.0 MiB"), err
    assert not loaded


def test_a_trace_file_that_is_a_fifo_does_not_hang(tmp_path: Path, capsys):
    """Opening a FIFO for reading blocks until a writer comes: a path naming one is refused, not read."""
    import os

    fifo = tmp_path / "trace.npz"
    os.mkfifo(fifo)
    err = one_line(["evaluate", "--dataset", str(fifo), "seed"], capsys)
    assert err == f"error: {fifo}: not a regular file or folder", err
    err = one_line(["evaluate", "--suite", str(fifo), "seed"], capsys)
    assert err == f"error: suite member '{fifo}': {fifo}: not a regular file or folder", err


def test_an_error_quoting_control_characters_stays_one_line(capsys):
    """A value quoted in an error (a config entry, a file name) may hold newlines or terminal escapes."""
    err = one_line(["evaluate", "--suite", "bad\nna\x1b[2Jme:search", "seed"], capsys)
    assert err.startswith("error: ") and "\\n" in err and "\\x1b[2J" in err and "\x1b" not in err, err


def test_a_suite_is_bounded_and_one_file_is_not_loaded_twice(tmp_path: Path, capsys,
                                                             monkeypatch: pytest.MonkeyPatch):
    from evaluator import task as task_module
    from evaluator.suite import MAX_MEMBERS
    from evaluator.traces import save_npz
    from tests.evaluator_helpers import skewed_trace

    many = ",".join(f"d{i}:search" for i in range(MAX_MEMBERS + 1))
    err = one_line(["evaluate", "--suite", many, "seed"], capsys)
    assert err == f"error: task option 'suite' names {MAX_MEMBERS + 1} members; a suite has at most {MAX_MEMBERS}"
    path = save_npz(skewed_trace(), tmp_path / "t.npz")
    loads = []
    original = task_module.load_task_trace
    monkeypatch.setattr(task_module, "load_task_trace", lambda o: loads.append(o.dataset) or original(o))
    (tmp_path / "x").mkdir()
    spellings = [str(path), f"{tmp_path}/./t.npz", f"{tmp_path}//t.npz", f"{tmp_path}/x/../t.npz"]
    err = one_line(["evaluate", "--suite", ",".join(spellings), "--replicas", "24", "--gpus", "8", "--nodes", "2",
                    "seed"], capsys)
    assert f"is named twice ('{spellings[1]}' is a second name for it)" in err, err
    assert len(loads) == 2  # refused at the second name, not after loading every one


@pytest.mark.parametrize("row, expected", [
    ("1000000000000,0,0,5", "its largest step, layer and expert (1000000000000, 0, 0) make a [1000000000001, 1, 1] "
                            "trace, more than this machine can load"),
    ("1e300,0,0,5", "row 1: column 'step' holds 1e+300; expected a whole number from 0 to 2**53"),
    ("18446744073709551615,0,0,5", "column 'step' holds 18446744073709551615; expected a whole number from 0"),
])
def test_a_csv_trace_declaring_a_huge_array_is_one_line(tmp_path: Path, capsys, row: str, expected: str):
    """One row naming step 10**12 asked for terabytes (a traceback), or wrapped past int64 (negative sizes)."""
    path = tmp_path / "trace.csv"
    path.write_text(f"step,layer,expert,count\n{row}\n")
    err = one_line(["evaluate", "--dataset", str(path), "--groups", "1", "seed"], capsys)
    assert err.startswith(f"error: {path}: ") and expected in err, err
