"""A warm process that forks one fresh sandbox worker per candidate.

Started once per harness as `python -m evaluator.sandbox.zygote` (torch imported once, here), it waits on a
control socket (a SOCK_SEQPACKET pair, so every message arrives whole) for a request, hands over the
socket of a worker it forked in advance, forks the next one, and reports each exit status. Unlike
multiprocessing's forkserver it never re-imports the harness's `__main__`, so any script may evaluate
candidates. Workers get their own process group so the harness can kill a worker with all it started.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading

CONTROL_FD_ENV = "EPLB_EVOLVE_ZYGOTE_FD"
SOCKET_BUFFER = 4 * 1024 * 1024


def _send(ctrl: socket.socket, lock: threading.Lock, message: dict) -> None:
    data = json.dumps(message).encode()
    with lock:
        try:
            ctrl.sendall(data)
        except OSError:
            pass


def _reap(ctrl: socket.socket, lock: threading.Lock) -> None:
    """Report every worker's exit status (a signal number as a negative code, like multiprocessing)."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            threading.Event().wait(0.05)
            continue
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        _send(ctrl, lock, {"exit": pid, "code": code})


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the zygote dies, so no worker outlives a killed harness.

    (The zygote itself exits when the harness's end of the control socket closes, as it does on kill -9.)"""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the timeout and the CPU limit still end the worker
        pass


def _fork_standby(ctrl: socket.socket) -> tuple[int, socket.socket]:
    """Fork a worker that waits for its job; return its pid and the harness's end of its socket."""
    from multiprocessing.connection import Connection

    from evaluator.sandbox.worker import worker_main

    harness_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for end in (harness_end, worker_end):  # a placement is ~0.5 MB: move it in few context switches
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setpgid(0, 0)
            _die_with_parent()
            ctrl.close()
            harness_end.close()
            conn = Connection(worker_end.detach())
            job = conn.recv()  # blocks until a candidate is assigned; EOF if the harness goes away
            worker_main(conn, job)
        except BaseException:  # noqa: BLE001 - the worker's own failure; the harness sees the exit code
            code = 70
        finally:
            os._exit(code)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    worker_end.close()
    return pid, harness_end


def _warm_up() -> None:
    """Run the tensor ops balancers use once, single-threaded, so no worker pays their first-call cost.

    Without this the first timed call of every candidate also paid for torch's lazy kernel setup.
    One thread means no thread pool exists yet when we fork."""
    import torch

    torch.set_num_threads(1)
    weight = torch.rand(8, 64, dtype=torch.float64) * 100
    counts = torch.ones(8, 64, dtype=torch.int64)
    for ints in (weight.long(), counts):
        ints.sort(dim=-1, descending=True, stable=True)
        ints.argsort(dim=-1)
        ints.cumsum(-1)
        torch.bincount(ints[0].clamp(0, 63))
    per_replica = weight / counts
    per_replica.max(dim=-1)
    per_replica.topk(4, dim=-1)
    per_replica.sort(dim=-1, descending=True, stable=True)
    per_replica.gather(-1, counts - 1)
    per_replica.unflatten(-1, (8, 8)).sum(-1).argmin(-1)
    counts.scatter_add_(1, counts - 1, torch.ones_like(counts))
    torch.repeat_interleave(torch.arange(64), counts[0].clamp(1, 2))
    torch.where(counts > 1, per_replica, torch.zeros_like(per_replica))
    torch.full((8, 64, 2), -1, dtype=torch.int64)[torch.arange(8)[:, None], torch.arange(64)[None], 0]


def serve(ctrl: socket.socket) -> None:
    """Keep one forked worker on standby, so a request is answered without waiting for a fork."""
    import evaluator.sandbox.worker  # noqa: F401 - the warm part: torch and numpy load here, once

    _warm_up()
    lock = threading.Lock()
    threading.Thread(target=_reap, args=(ctrl, lock), daemon=True).start()
    standby = _fork_standby(ctrl)
    while True:
        try:
            msg = ctrl.recv(4096)
        except OSError:
            return
        if not msg:
            return  # the harness went away
        request = json.loads(msg.decode())
        pid, harness_end = standby
        with lock:
            try:
                socket.send_fds(ctrl, [json.dumps({"job": request["job"], "pid": pid}).encode()], [harness_end.fileno()])
            except OSError:
                return
        harness_end.close()
        standby = _fork_standby(ctrl)


def main() -> None:
    fd = int(os.environ[CONTROL_FD_ENV])
    ctrl = socket.socket(fileno=fd)
    serve(ctrl)


if __name__ == "__main__":
    sys.exit(main())
