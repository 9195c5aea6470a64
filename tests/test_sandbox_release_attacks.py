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
