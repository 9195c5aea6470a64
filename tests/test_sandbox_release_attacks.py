"""Hostile programs against the cheaper release and reply path: a finished worker stopped and killed later,
replies decoded after the last call, stdout and stderr in anonymous in-memory files.

Each attack asserts what really happens: the program is refused with its one line, or what it does is
harmless, or its calls are timed honestly; then an innocent program in the same harness scores normally.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from evaluator.sandbox import harness
from evaluator.task import EplbTask
from tests.evaluator_helpers import SEED_CODE, small_task
from tests.test_sandbox_attacks import assert_innocent_scores, hostile, tags


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> EplbTask:
    return small_task(tmp_path_factory.mktemp("release"), timeout_s=10.0)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _thread_states(pid: int) -> set[str]:
    """The state letter of every thread of `pid` (R running, S sleeping, T or t stopped); empty once gone."""
    states = set()
    try:
        tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir() if t.name.isdigit()]
    except OSError:
        return states
    for tid in tids:
        try:
            states.add(Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0])
        except OSError:
            pass
    return states


def _candidate_process(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the host pid of every worker's outer process the harness takes (see `harness._Zygote.fork`)."""
    from tests.test_sandbox_standby import _host_pid

    outers: list[int] = []
    original = harness._Zygote.fork

    def recording(self):  # type: ignore[no-untyped-def]
        pid, fd, pidfd = original(self)
        outers.append(_host_pid(pid))
        return pid, fd, pidfd

    monkeypatch.setattr(harness._Zygote, "fork", recording)
    return outers


# Leaves the worker's process group (and its session), then keeps a thread busy once the calls are over:
# a stop sent to the group would not reach it, and it would run beside the reference's timed calls and the
# next candidate's, and past the thread cap (the outer process that counts threads is stopped).
ESCAPE = r'''
import threading, time
_last = [time.monotonic()]
def _spin():
    while True:
        if time.monotonic() - _last[0] > 0.02:
            sum(range(10000))
        else:
            time.sleep(0.001)
_try("SETSID", os.setsid)
_try("SETPGID", lambda: os.setpgid(0, 0))
_try("SETPGRP", os.setpgrp)
threading.Thread(target=_spin, daemon=True).start()
_seed = rebalance_experts
def rebalance_experts(*args):
    _last[0] = time.monotonic()
    return _seed(*args)
'''


def test_a_finished_worker_cannot_leave_the_group_that_is_stopped(
        task: EplbTask, monkeypatch: pytest.MonkeyPatch) -> None:
    outers = _candidate_process(monkeypatch)
    run = task.sandbox.run(hostile(ESCAPE), task.plan_windows, task.args, keep_worker=True)
    try:
        assert run.ok, run.error
        found = tags(run)
        assert {found[t] for t in ("SETSID", "SETPGID", "SETPGRP")} == {"FAIL"}, run.stdout
        (init,) = _children(outers[-1])  # the candidate's worker (the reference's, timed first, may precede it)
        (candidate,) = _children(init)
        deadline = time.monotonic() + 10
        while _thread_states(candidate) - {"T", "t"} and time.monotonic() < deadline:
            time.sleep(0.005)
        # every thread stopped, not gone: the worker is only killed on `release`
        assert _thread_states(candidate) in ({"T"}, {"t"}, {"T", "t"}), _thread_states(candidate)
    finally:
        run.release()
    assert_innocent_scores(task)


# Writes each placement twice: as the reply to the window asked and, at once, as the reply to the next window,
# before that window is sent. The harness would read it from the socket's buffer, so the clock of that call
# would hold none of the work and none of the writing (with a placement that ignores its window, computed in
# the untimed warm-up call, every timed call could be answered this way).
PRESEND = r'''
import json as _json, struct as _struct, sys, time
_transport = sys.modules["evaluator.sandbox.transport"]
_write = _transport.write_parts
_ahead = set()
def _write_ahead(fd, parts):
    first = bytes(parts[0])
    size = int.from_bytes(first[:4], "little")
    envelope = _json.loads(first[4:4 + size])
    header = envelope["header"]
    if header.get("type") != "placement":
        return _write(fd, parts)
    if header["index"] not in _ahead:
        _write(fd, parts)
    envelope["header"] = dict(header, index=header["index"] + 1)
    text = _json.dumps(envelope).encode()
    text += b" " * (-(4 + len(text)) % 8)
    _ahead.add(header["index"] + 1)
    _write(fd, [_struct.pack("<I", len(text)) + text, *parts[1:]])
_transport.write_parts = _write_ahead
_seed = rebalance_experts
def rebalance_experts(*args):
    time.sleep(0.04)
    return _seed(*args)
'''


def test_a_reply_sent_before_its_window_is_refused(task: EplbTask) -> None:
    result = task.evaluate(SEED_CODE + PRESEND)
    assert not result.correct, [w["runtime_s"] for w in result.per_window]
    assert result.error == ("the worker sent a message that breaks the protocol: the reply for window 0 does "
                            "not repeat the token sent with that window (a reply written before its window "
                            "came?)"), result.error
    assert_innocent_scores(task)


# --- a hostile or corrupt speed memo ----------------------------------------------------------------------
# The memo is a file in the user's cache, not something a candidate reaches; but a file damaged, or written
# by another tool or another version, must not stop evaluation (no traceback, no hang): the fresh
# measurement is used instead. Each case runs in a child process, so a hang fails the test instead of
# holding the memo's lock for every later test.

REMEMBER = """
import sys
from pathlib import Path
from evaluator.speed_memo import remembered
print("OCTAVES", remembered("k", 2, Path(sys.argv[1])), remembered("k", 3, Path(sys.argv[1])))
"""


def _remember_in_child(path: Path) -> str:
    import subprocess
    import sys

    from tests.evaluator_helpers import REPO

    try:
        done = subprocess.run([sys.executable, "-c", REMEMBER, str(path)], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        return "hung"
    return done.stdout.strip() if done.returncode == 0 else done.stderr.strip().splitlines()[-1]


def _memo_with(path: Path, *statements: str) -> Path:
    import sqlite3

    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return path


JUNK_OCTAVES = [(column, octaves) for column in ("octaves INTEGER NOT NULL", "octaves")
                for octaves in ("'fast'", "NULL", "9e999", "2.5", "x'00'") if (column, octaves)
                != ("octaves INTEGER NOT NULL", "NULL")]  # the memo's own schema, and one without a type


@pytest.mark.parametrize(("column", "octaves"), JUNK_OCTAVES)
def test_a_memo_holding_something_else_than_an_octave_is_not_believed(tmp_path: Path, column: str,
                                                                       octaves: str) -> None:
    path = _memo_with(tmp_path / "memo.sqlite", f"CREATE TABLE speed (key TEXT PRIMARY KEY, {column})",
                      f"INSERT INTO speed VALUES ('k', {octaves})")
    assert _remember_in_child(path) == "OCTAVES 2 3"  # measured afresh each time: the stored row is not an octave


def test_a_memo_whose_schema_runs_code_on_every_write_is_not_used(tmp_path: Path) -> None:
    """A trigger (or a view) in the file runs inside every write: one that never ends held the memo's lock,
    and so every evaluation of the process, forever."""
    path = _memo_with(
        tmp_path / "memo.sqlite", "CREATE TABLE speed (key TEXT PRIMARY KEY, octaves INTEGER NOT NULL)",
        "CREATE TRIGGER forever BEFORE INSERT ON speed BEGIN SELECT count(*) FROM "
        "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT i FROM n); END")
    before = path.read_bytes()
    assert _remember_in_child(path) == "OCTAVES 2 3"
    assert path.read_bytes() == before  # and left as it was (not even switched to write-ahead logging)


@pytest.mark.parametrize("kind", ["fifo", "directory", "garbage"])
def test_a_memo_that_is_not_a_database_file_is_not_used(tmp_path: Path, kind: str) -> None:
    import os

    path = tmp_path / "memo.sqlite"
    if kind == "fifo":  # opened, SQLite's first read waited forever on it
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    assert _remember_in_child(path) == "OCTAVES 2 3"


# --- replies that begin as the placement asked for (decoded only after the last call) ---------------------
# Each rewrites the worker's replies after their header's first key, so the harness's quick look (the
# placement header of the window asked, token included, no larger than a placement can be) lets it wait;
# decoded after the last call, every one must still be refused with its one line, or be harmless.
DEFERRED_FORGER = r'''
import json as _json, struct as _struct, sys
_MODE = __FORGE_MODE__
_transport = sys.modules["evaluator.sandbox.transport"]
_write = _transport.write_parts

def _forged(fd, parts):
    message = b"".join(bytes(p) for p in parts)
    size = int.from_bytes(message[:4], "little")
    text, body = message[4:4 + size].rstrip(b" "), message[4 + size:]
    header = _json.loads(text)["header"]
    if header.get("type") != "placement":
        return _write(fd, parts)
    if _MODE == "second header":  # JSON keeps the last of two equal keys
        second = _json.dumps(dict(header, index=header["index"] + 1))
        text = text[:-1] + b', "header": ' + second.encode() + b"}"
    elif _MODE == "second header without token":
        second = _json.dumps({"type": "placement", "index": header["index"]})
        text = text[:-1] + b', "header": ' + second.encode() + b"}"
    elif _MODE == "length past the header":
        size = len(text) + 8
    elif _MODE == "arrays short":
        body = body[:-8]
    elif _MODE == "arrays swapped":
        arrays = _json.loads(text)["arrays"]
        text = _json.dumps({"header": header, "arrays": arrays[::-1]}).encode()
    if _MODE in ("padded header", "misaligned"):
        text += b" " * (60000 if _MODE == "padded header" else 0)
        size = len(text)
    elif _MODE != "length past the header":
        text += b" " * (-(4 + len(text)) % 8)
        size = len(text)
    _write(fd, [_struct.pack("<I", size) + text + body])
_transport.write_parts = _forged
'''

DEFERRED_FORGERIES = {
    "second header": "breaks the protocol: a reply for window 0 came when window -1 was asked",
    "second header without token": "breaks the protocol: the reply for window -1 does not repeat the token",
    "length past the header": "breaks the protocol: the header is not JSON",
    "arrays short": "breaks the protocol: an array runs past the end of the message",
    "arrays swapped": "breaks the protocol: placement shapes [[4, 16], [4, 16, ",
    "padded header": "",  # legal: the harness keeps the arrays, and at most a header's bytes beside them
    "misaligned": "",  # legal: copied, not read in place
}


def _decoded_after_sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many windows had been sent when each reply was decoded (all of them: the reply waited)."""
    from evaluator.sandbox import transport

    sent, seen = [0], []
    send, decoded = transport.send_framed, harness.Sandbox._decoded

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        sent[0] += len(args) + len(kwargs) == 4  # a window (with its token), not the job
        return send(*args, **kwargs)

    def recording(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(sent[0])
        return decoded(self, *args, **kwargs)

    monkeypatch.setattr(transport, "send_framed", counting)
    monkeypatch.setattr(harness.Sandbox, "_decoded", recording)
    return seen


@pytest.mark.parametrize("mode", list(DEFERRED_FORGERIES))
def test_a_reply_that_only_begins_as_a_placement_is_still_checked(
        task: EplbTask, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from evaluator.sandbox import wire
    from tests.test_sandbox_redteam import _held_bytes

    program = SEED_CODE + DEFERRED_FORGER.replace("__FORGE_MODE__", repr(mode))
    with monkeypatch.context() as patch:
        decoded_after = _decoded_after_sends(patch)
        run = task.sandbox.run(program, task.plan_windows, task.args)
    assert decoded_after and decoded_after[0] == len(task.plan_windows) + 1, decoded_after  # it waited
    expected = DEFERRED_FORGERIES[mode]
    if expected:
        assert not run.ok and not run.placements
        assert expected in run.error and "\n" not in run.error, run.error
        assert task.evaluate(program).error == run.error
    else:
        assert run.ok, run.error
        for placement in run.placements:
            needed = sum(a.nbytes for a in placement)
            assert needed <= _held_bytes(placement) <= needed + wire.HEADER_BYTES
        assert task.evaluate(program).scores["native"] == task.evaluate(SEED_CODE).scores["native"]
    assert_innocent_scores(task)


# log2phy as wide as the most replicas one expert may hold (so the reply waits), one value past the counts
COMPACT_JUNK = r'''
_narrow = rebalance_experts
def rebalance_experts(weight, num_replicas, *args):
    phy2log, log2phy, logcnt = _narrow(weight, num_replicas, *args)
    wide = torch.full((*log2phy.shape[:2], num_replicas - log2phy.shape[1] + 1), -1, dtype=torch.int64)
    wide[:, :, : log2phy.shape[2]] = log2phy
    wide[-1, -1, -1] = 0  # one value where -1 belongs
    return phy2log, wide, logcnt
'''


def test_a_waiting_reply_that_breaks_the_contract_is_refused_in_its_words(
        task: EplbTask, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        decoded_after = _decoded_after_sends(patch)
        run = task.sandbox.run(SEED_CODE + COMPACT_JUNK, task.plan_windows, task.args)
    assert decoded_after[0] == len(task.plan_windows) + 1, decoded_after  # it waited
    width = task.options.num_replicas - 16 + 1
    assert not run.ok and not run.placements
    assert run.error == f"window 0: inconsistent maps: log2phy[3, 15, {width - 1}] = 0 past logcnt must be -1"
    assert task.evaluate(SEED_CODE + COMPACT_JUNK).error == run.error
    assert_innocent_scores(task)


# --- stdout and stderr: anonymous in-memory files the harness made ---------------------------------------
MEMFD = r'''
import fcntl, mmap
_try("TRUNCATE", lambda: os.ftruncate(2, 1 << 30))  # 1 GiB of memory no address-space cap counts
_try("PWRITE", lambda: os.pwrite(2, b"x", 100 << 20))
_try("SEEKWRITE", lambda: (os.lseek(2, 1 << 40, 0), os.write(2, b"x")))
_try("SEAL", lambda: fcntl.fcntl(2, 1033, 8))  # F_ADD_SEALS F_SEAL_WRITE: keep the harness from ... nothing
_try("LEASE", lambda: fcntl.fcntl(2, 1024, fcntl.F_WRLCK))  # F_SETLEASE
os.lseek(2, 0, 0)
def _fill():
    block = b"y" * (1 << 20)
    for _ in range(16):
        os.write(2, block)
_try("FILL", _fill)  # stops at the output cap
def _map():
    size = os.fstat(2).st_size
    view = mmap.mmap(2, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    view[:5] = b"MMAP!"
    return size
_try("MMAP", _map)  # within the file: its own output, rewritten
'''


def test_the_output_files_hold_no_more_than_the_output_cap(task: EplbTask) -> None:
    import re

    result = task.evaluate(hostile(MEMFD))
    assert result.correct, result.error
    found = tags(result)
    refused = ("TRUNCATE", "PWRITE", "SEEKWRITE", "SEAL", "LEASE", "FILL")
    assert {found[t] for t in refused} == {"FAIL"} and found["MMAP"] == "OK", result.stdout
    cap = task.sandbox.limits.output_bytes
    assert f"MMAP:OK:'{cap}'" in result.stdout, result.stdout
    cut = re.search(r"\[\.\.\. (\d+) bytes cut \.\.\.\]", result.stderr)
    assert cut and int(cut.group(1)) == cap - 2 * task.sandbox.limits.keep_output_chars
    assert result.stderr.startswith("MMAP!yyy")
    assert_innocent_scores(task)


def test_touching_an_output_file_past_its_end_is_the_programs_crash(task: EplbTask) -> None:
    shrink = "import mmap\nos.write(2, bytes(8192))\n_view = mmap.mmap(2, 8192, mmap.MAP_SHARED)\nos.ftruncate(2, 0)\n"
    result = task.evaluate(hostile(shrink + "_view[4096] = 1\n"))  # a page past the end of the file
    assert result.error == "the worker crashed with SIGBUS", result.error
    assert_innocent_scores(task)


STALLS = r'''
import time
_calls = []
_seed = rebalance_experts
def rebalance_experts(*args):
    _calls.append(1)
    if len(_calls) == 4:  # the warm-up call, windows 0 and 1 answered; window 2 never is
        time.sleep(3600)
    return _seed(*args)
'''


def test_a_timeout_after_waiting_replies_counts_them(tmp_path: Path) -> None:
    """Replies that wait to be decoded were still answered: the timeout's line says how many."""
    quick = small_task(tmp_path, timeout_s=2.0)
    result = quick.evaluate(SEED_CODE + STALLS)
    assert result.error == ("timed out after 2 s with 2 of 3 windows answered (an endless loop, or a balancer "
                            "far too slow)"), result.error


def test_the_reference_is_never_timed_beside_a_finished_worker(
        task: EplbTask, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished worker is stopped, not killed, and a stop waits for the system call under way (a worker
    filling 2 GB of memory ran on for 0.6 s of CPU after its stop): timed beside it, the reference (timed
    once per process) would be slower, and every later speed ratio of that process higher."""
    from tests.test_sandbox_standby import _alive

    monkeypatch.setattr(harness, "_REFERENCE_TIMES", {})  # timed afresh here
    outers = _candidate_process(monkeypatch)
    alive_then: list[list[int]] = []
    original = harness.Sandbox._run_retrying

    def spying(self, code, windows, args, keep_worker=False):  # type: ignore[no-untyped-def]
        if code == self.reference_code:
            alive_then.append([pid for pid in outers if _alive(pid)])
        return original(self, code, windows, args, keep_worker)

    monkeypatch.setattr(harness.Sandbox, "_run_retrying", spying)
    result = task.evaluate(SEED_CODE + "\n# a candidate, not the reference\n")
    assert result.correct and result.metrics["reference_runtime_median_s"] > 0, result.error
    assert alive_then == [[]], alive_then
