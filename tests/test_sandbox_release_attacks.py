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
from tests.test_sandbox_attacks import PRELUDE, assert_innocent_scores, hostile, tags


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
        (init,) = _children(outers[0])  # the candidate's worker (the reference's may follow)
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
