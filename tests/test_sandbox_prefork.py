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


REACH_THE_NEXT_WORKER = r'''
import ctypes, signal, time
_libc = ctypes.CDLL(None, use_errno=True)
_plan = rebalance_experts
_done = []

def _attack():
    # the worker for the next candidate is forked once this program is loaded: reach for it now
    time.sleep(0.5)
    for _path in ("/scratch/statistics.py", "/dev/shm/statistics.py", "/tmp/statistics.py"):
        _try("PLANT" + _path, lambda: open(_path, "w").write("raise RuntimeError('planted')\n"))
    _named = [p for p in range(1, 400) if p != 2 and _alive(p)]
    print("NAMED:" + ",".join(map(str, _named)), flush=True)
    for _sig in (signal.SIGSTOP, signal.SIGKILL):
        try:
            os.kill(-1, _sig)  # every process this one can signal
        except OSError:
            pass
    _init = os.pidfd_open(1)
    _try("GETFD", lambda: _check(_libc.syscall(438, _init, 1, 0)))  # the init's stdout: the harness's
    _buf = ctypes.create_string_buffer(16)
    _iov = (ctypes.c_void_p * 2)(ctypes.cast(_buf, ctypes.c_void_p).value, 16)
    _far = (ctypes.c_void_p * 2)(0x400000, 16)
    _try("VMREAD", lambda: _check(_libc.process_vm_readv(1, _iov, 1, _far, 1, 0)))

def _alive(pid):
    try:
        os.close(os.pidfd_open(pid))
        return True
    except OSError:
        return False

def _check(result):
    if result < 0:
        raise OSError(ctypes.get_errno(), "refused")
    return result

def rebalance_experts(weight, *args):
    if not _done and os.getpid() == 2:  # only inside the sandbox's own PID namespace
        _done.append(1)
        _attack()
    return _plan(weight, *args)
'''

LOOK = r'''
import os
print("SEEN:" + repr(sorted(os.listdir("/scratch")) + sorted(os.listdir("/dev/shm"))), flush=True)
import statistics
'''


def test_a_candidate_cannot_reach_the_worker_forked_for_the_next(tmp_path) -> None:
    """While a candidate runs, the worker for the next one waits beside it: the running one can name no
    process but its init, signal nothing, take no descriptor, and leave nothing the next one sees."""
    from tests.evaluator_helpers import SEED_CODE, small_task
    from tests.test_sandbox_attacks import hostile, tags

    task = small_task(tmp_path)
    assert task.evaluate(SEED_CODE).correct
    zygote = harness._ZYGOTES[(True, "cpu")]
    attacked = task.evaluate(hostile(REACH_THE_NEXT_WORKER))
    assert attacked.correct, attacked.error
    found = tags(attacked)
    assert "NAMED:1\n" in attacked.stdout, attacked.stdout
    assert found["HOOKCHECK"] == "OK" and {v for k, v in found.items() if k != "HOOKCHECK"} == {"FAIL"}, found
    assert {"GETFD", "VMREAD", "PLANT/tmp/statistics.py"} <= set(found)
    after = task.evaluate(SEED_CODE + LOOK)
    assert after.correct, after.error
    assert "SEEN:[]" in after.stdout
    assert harness._ZYGOTES[(True, "cpu")] is zygote, "the waiting worker was harmed and the sandbox restarted"
