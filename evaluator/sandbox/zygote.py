"""A warm process that forks one fresh sandbox worker per candidate.

Started once per harness as `python -m evaluator.sandbox.zygote` (inside bubblewrap, see `bwrap`; torch
imported once, here), it waits on a control socket (a SOCK_SEQPACKET pair, so every message arrives
whole) for a request, forks a fresh worker and hands over its socket and a pidfd, and reports each exit
status. The harness asks for a worker ahead of need (while the previous candidate runs), so a worker is
usually waiting when an evaluation starts. Unlike multiprocessing's forkserver it never re-imports the harness's
`__main__`, so any script may evaluate candidates.

A worker is three processes. The outer one enters new namespaces (see `confine`) and forks the init
of the new PID namespace (PID 1), which seals the namespace and forks the candidate's process (PID 2);
the outer one and the init only wait and pass the candidate's exit status on. Killing the outer one
kills the init, and with it every process of the namespace: nothing the candidate starts survives. The zygote is not
dumpable, so no process of the same user can ptrace it or read its memory.
"""
from __future__ import annotations

import gc
import json
import os
import signal
import socket
import struct
import sys
import threading
import time

from evaluator.sandbox import confine

CONTROL_FD_ENV = "EPLB_EVOLVE_ZYGOTE_FD"
ISOLATE_ENV = "EPLB_EVOLVE_ZYGOTE_ISOLATE"
SOCKET_BUFFER = 4 * 1024 * 1024
ERROR_EXIT = 70  # the worker machinery itself failed (before or around the candidate)
THREAD_LIMIT_EXIT = 200  # the candidate held more than MAX_THREADS threads (its own codes stop at 192)
MAX_THREADS = 256
THREAD_POLL_S = 0.05


def _send(ctrl: socket.socket, lock: threading.Lock, message: dict, fds: tuple[int, ...] = ()) -> None:
    data = json.dumps(message).encode()
    with lock:
        try:
            if fds:
                socket.send_fds(ctrl, [data], list(fds))
            else:
                ctrl.sendall(data)
        except OSError:
            pass


class _Workers:
    """The zygote's workers not yet reaped: a pid is only signalled while it still names one of them.

    A pid is free for the next fork once its worker is reaped, and a candidate can run the pid counter round
    (every thread it starts takes one), so a pid is never used as a name after that moment. (No pidfds are
    kept: every worker forked later would inherit them.)"""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: set[int] = set()

    def freeze(self, pid: int) -> None:
        """Stop every process of a finished worker (SIGSTOP to its group) until it is killed: nothing it left
        running keeps using a core, or runs beside the next candidate."""
        with self.lock:
            if pid in self.live:
                try:
                    os.killpg(pid, signal.SIGSTOP)
                except OSError:
                    pass

    def kill(self, pid: int) -> None:
        with self.lock:
            if pid not in self.live:
                return  # already reaped: the pid may name another worker by now
            try:  # its exit (three copies of this process's memory to tear down) waits for idle cores
                os.setpriority(os.PRIO_PGRP, pid, 19)
            except OSError:
                pass
            for kill in (os.killpg, os.kill):  # unreaped, so neither the pid nor its group id was reused
                try:
                    kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def _reap(ctrl: socket.socket, lock: threading.Lock, workers: _Workers) -> None:
    """Report every worker's exit status (a signal number as a negative code, like multiprocessing).

    The report goes out before the worker is reaped, so before its pid can be given to another worker:
    the harness, which reads the reports in order, never takes one worker's exit for a later one's."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            threading.Event().wait(0.05)
            continue
        if info is None:
            continue
        pid = info.si_pid
        code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        try:  # what is left of its process group (children of an unisolated candidate); the id is still its own
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        _send(ctrl, lock, {"exit": pid, "code": code})
        with workers.lock:
            workers.live.discard(pid)
            os.waitpid(pid, 0)


def _pass_on(status: int) -> None:
    """Exit with how the candidate's process ended: its exit code (capped at 127), or 128 + its signal.

    The outer process itself never dies of a signal unless something outside the candidate's reach
    killed it, so the harness can tell a broken sandbox from a crashed program."""
    code = os.waitstatus_to_exitcode(status)
    os._exit(128 - code if code < 0 else min(code, 127))


def _candidate(worker_end: socket.socket, status_w: int, base_bytes: int, isolate: bool) -> None:
    """PID 2 of the worker's namespace, already sealed: serve one candidate (which may start no process)."""
    from evaluator.sandbox.worker import worker_main

    code = 0
    try:
        os.close(status_w)  # only the init reports the exit status: the candidate cannot forge it
        confine.die_with_parent()
        if isolate:
            confine.forbid_new_processes()
        worker_main(worker_end, base_bytes)
    except BaseException:  # noqa: BLE001 - the worker's own failure; the harness sees the exit code
        code = ERROR_EXIT
    finally:
        os._exit(code)


def _init(worker_end: socket.socket, status_w: int, isolate: bool) -> None:
    """PID 1 of the worker's namespace: seal it, fork the candidate's process, report how it ended.

    The candidate does not run as PID 1 itself because the kernel ignores signals that PID 1 sends
    itself (raise, abort, os.kill of its own pid), so its crashes would go unreported."""
    from evaluator.sandbox.worker import address_space_bytes

    try:
        confine.die_with_parent()
        base_bytes = address_space_bytes()
        if isolate:
            confine.seal()
        child = os.fork()
        if child == 0:
            _candidate(worker_end, status_w, base_bytes, isolate)
        worker_end.close()
        os.write(status_w, struct.pack("i", os.waitpid(child, 0)[1]))
        os._exit(0)
    except BaseException:  # noqa: BLE001
        os._exit(ERROR_EXIT)


def _threads_below(proc: int, init: int) -> int:
    """Threads of the init's children (the candidate's process), read through the zygote's /proc."""
    try:
        fd = os.open(f"{init}/task/{init}/children", os.O_RDONLY, dir_fd=proc)
        try:
            children = os.read(fd, 4096).split()
        finally:
            os.close(fd)
        total = 0
        for child in children:
            fd = os.open(f"{int(child)}/status", os.O_RDONLY, dir_fd=proc)
            try:
                status = os.read(fd, 8192)
            finally:
                os.close(fd)
            total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith(b"Threads:")), 0)
        return total
    except (OSError, ValueError):
        return 0  # a child that just ended, or no child yet


def _wait_capping_threads(init: int, proc: int) -> int:
    """Wait for the init; kill its whole namespace if the candidate holds more than MAX_THREADS threads.

    RLIMIT_NPROC does not count threads of the host's root user, and every thread takes one of the
    host's pids: a thread bomb would otherwise starve the machine until the evaluation's timeout."""
    while True:
        pid, status = os.waitpid(init, os.WNOHANG)
        if pid:
            return status
        if _threads_below(proc, init) > MAX_THREADS:
            os.kill(init, signal.SIGKILL)
            os.waitpid(init, 0)
            os._exit(THREAD_LIMIT_EXIT)
        time.sleep(THREAD_POLL_S)


def _outer(worker_end: socket.socket, isolate: bool) -> None:
    """Enter new namespaces, fork the namespace's init, wait for it and exit as the candidate did."""
    try:
        os.setpgid(0, 0)
        confine.die_with_parent()
        if isolate:
            confine.enter_namespaces()
        proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # before the init hides it
        status_r, status_w = os.pipe()
        init = os.fork()
        if init == 0:
            os.close(proc)  # the zygote's /proc: never within the candidate's reach
            os.close(status_r)
            _init(worker_end, status_w, isolate)
        os.close(status_w)
        worker_end.close()
        status = _wait_capping_threads(init, proc)
        reported = os.read(status_r, 4)
        _pass_on(struct.unpack("i", reported)[0] if len(reported) == 4 else status)
    except BaseException:  # noqa: BLE001
        pass
    os._exit(ERROR_EXIT)


def _fork_standby(ctrl: socket.socket, isolate: bool) -> tuple[int, socket.socket, int]:
    """Fork a worker that waits for its job; return its pid, the harness's end of its socket, a pidfd."""
    harness_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for end in (harness_end, worker_end):  # a placement is ~0.5 MB: move it in few context switches
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    pid = os.fork()
    if pid == 0:
        ctrl.close()
        harness_end.close()
        _outer(worker_end, isolate)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    worker_end.close()
    return pid, harness_end, os.pidfd_open(pid)


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


def serve(ctrl: socket.socket, isolate: bool) -> None:
    """Fork one fresh worker per request and hand it over at once.

    The harness asks for the next worker as soon as it takes one (see `harness._Zygote.fork`), so the
    fork happens while an evaluation runs and a request is answered from a worker already waiting."""
    import evaluator.sandbox.worker  # noqa: F401 - the warm part: torch and numpy load here, once

    confine.undumpable()
    _warm_up()
    # Everything alive now moves to the collector's permanent generation: a worker's collections never
    # walk (and so never write to, copying page after page of) the objects it shares with the zygote.
    gc.collect()
    gc.freeze()
    lock = threading.Lock()
    workers = _Workers()
    threading.Thread(target=_reap, args=(ctrl, lock, workers), daemon=True).start()
    _send(ctrl, lock, {"ready": True})
    while True:
        try:
            msg = ctrl.recv(4096)
        except OSError:
            return
        if not msg:
            return  # the harness went away
        request = json.loads(msg.decode())
        if "kill" in request:
            workers.kill(int(request["kill"]))
            continue
        if "freeze" in request:
            workers.freeze(int(request["freeze"]))
            continue
        with workers.lock:  # recorded before the reaper can reap it
            pid, harness_end, pidfd = _fork_standby(ctrl, isolate)
            workers.live.add(pid)
        _send(ctrl, lock, {"job": request["job"], "pid": pid}, (harness_end.fileno(), pidfd))
        harness_end.close()
        os.close(pidfd)


def main() -> None:
    ctrl = socket.socket(fileno=int(os.environ[CONTROL_FD_ENV]))
    serve(ctrl, os.environ.get(ISOLATE_ENV) == "1")


if __name__ == "__main__":
    sys.exit(main())
