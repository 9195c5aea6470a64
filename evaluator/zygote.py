"""A warm process that forks one fresh sandbox worker per candidate.

Started once per harness as `python -m evaluator.zygote` (torch imported once, here), it waits on a
control socket (a SOCK_SEQPACKET pair, so every message arrives whole) for a job socket, forks, and reports the child's pid and later its exit status. Unlike
multiprocessing's forkserver it never re-imports the harness's `__main__`, so any script may evaluate
candidates. Workers get their own process group so the harness can kill a worker with all it started.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading

CONTROL_FD_ENV = "EPLB_EVOLVE_ZYGOTE_FD"


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


def serve(ctrl: socket.socket) -> None:
    from multiprocessing.connection import Connection

    from evaluator.sandbox_worker import worker_main  # the warm part: torch and numpy load here, once

    lock = threading.Lock()
    threading.Thread(target=_reap, args=(ctrl, lock), daemon=True).start()
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctrl, 4096, 1)
        except OSError:
            return
        if not msg or not fds:
            return  # the harness went away
        request = json.loads(msg.decode())
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.setpgid(0, 0)
                ctrl.close()
                conn = Connection(fds[0])
                job = conn.recv()
                worker_main(conn, job)
            except BaseException:  # noqa: BLE001 - the worker's own failure; the harness sees the exit code
                code = 70
            finally:
                os._exit(code)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        os.close(fds[0])
        _send(ctrl, lock, {"job": request["job"], "pid": pid})


def main() -> None:
    fd = int(os.environ[CONTROL_FD_ENV])
    ctrl = socket.socket(fileno=fd)
    serve(ctrl)


if __name__ == "__main__":
    sys.exit(main())
