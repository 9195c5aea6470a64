"""Workers forked ahead of need cannot be confused with one another: an exit reported for a pid belongs to
the worker that had that pid then, never to a later worker given the same pid (a candidate can run the pid
counter round by starting threads), and a used worker's pid is never signalled once it may name another."""
from __future__ import annotations

import json
import os
import socket
import threading

from evaluator.sandbox import harness


def _listening_zygote() -> tuple[harness._Zygote, socket.socket]:
    """A `_Zygote` whose listener reads messages the test sends as the zygote would (no process started)."""
    zygote = harness._Zygote.__new__(harness._Zygote)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    zygote.sock = ours
    zygote.changed = threading.Condition()
    zygote.ready, zygote.gone = False, False
    zygote.handed, zygote.prefetched, zygote.exits = {}, [], {}
    threading.Thread(target=zygote._listen, daemon=True).start()
    return zygote, theirs


def _handed(zygote: harness._Zygote, job: int) -> bool:
    with zygote.changed:
        return zygote.changed.wait_for(lambda: job in zygote.handed, 5.0)


def test_an_earlier_workers_exit_is_not_read_as_a_new_worker_with_its_pid() -> None:
    zygote, side = _listening_zygote()
    try:
        side.send(json.dumps({"exit": 4242, "code": -9}).encode())  # an earlier worker, killed after its evaluation
        r, w = os.pipe()  # stand-ins for the new worker's socket and pidfd
        socket.send_fds(side, [json.dumps({"job": 0, "pid": 4242}).encode()], [r, w])
        os.close(r)
        os.close(w)
        assert _handed(zygote, 0)
        # the stale -9 would have made a program's crash look like a broken sandbox (retried, then fatal)
        assert zygote.exit_code(4242, 0.2) is None
        side.send(json.dumps({"exit": 4242, "code": 3}).encode())
        assert zygote.exit_code(4242, 5.0) == 3
    finally:
        side.close()
        with zygote.changed:
            zygote.changed.wait_for(lambda: zygote.gone, 5.0)
        zygote.sock.close()
        for _pid, fd, pidfd in zygote.handed.values():
            os.close(fd)
            os.close(pidfd)


def _zygote_pid_inside(zygote: harness._Zygote) -> int:
    """The zygote's pid as bubblewrap's namespace numbers it (what a kill request names)."""
    from pathlib import Path

    from tests.test_bad_programs import _descendants

    inside = []
    for pid in _descendants(zygote.process.pid):
        try:
            if b"evaluator.sandbox.zygote" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            nspid = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                         if line.startswith("NSpid:"))
        except (OSError, StopIteration):
            continue
        inside.append(int(nspid.split()[2]))  # bubblewrap's namespace, the second level
    assert inside, "the zygote is not running"
    return min(inside)  # workers are its forks, with the same command line and later pids


def test_the_zygote_signals_only_its_own_live_workers(tmp_path) -> None:
    """A kill request naming a pid that is not a live worker (a reaped one's pid, given since to another
    process) is ignored: here the zygote's own pid, which it used to kill."""
    from tests.evaluator_helpers import SEED_CODE, small_task

    task = small_task(tmp_path)
    assert task.evaluate(SEED_CODE).correct
    zygote = harness._ZYGOTES[(True, "cpu")]
    zygote._send({"kill": _zygote_pid_inside(zygote)})
    result = task.evaluate(SEED_CODE)
    assert result.correct, result.error
    assert harness._ZYGOTES[(True, "cpu")] is zygote and zygote.alive(), "the zygote was killed and replaced"
