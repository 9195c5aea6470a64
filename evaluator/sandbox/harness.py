"""Run an untrusted balancer in a separate process and bring back only its placements and timings.

Each candidate gets a fresh process forked from a warm zygote (torch already imported), its own
process group (killed whole on timeout), an address-space cap, an output cap, and an audit hook
(see `worker`). The harness streams planning windows one at a time and decodes replies
without pickle. Scoring happens here, outside the worker, on windows the worker never received.
"""
from __future__ import annotations

import itertools
import json
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from evaluator.sandbox import wire
from evaluator.sandbox.zygote import CONTROL_FD_ENV
from evaluator.paths import REPO_ROOT



class _Zygote:
    """Client of the warm `evaluator.sandbox.zygote` process: asks it to fork workers, learns their exit codes."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env[CONTROL_FD_ENV] = str(theirs.fileno())
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "evaluator.sandbox.zygote"], pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL
        )
        theirs.close()
        self.sock = ours
        self.send_lock = threading.Lock()
        self.changed = threading.Condition()
        self.pids: dict[int, tuple[int, int]] = {}
        self.exits: dict[int, int] = {}
        self.jobs = itertools.count()
        threading.Thread(target=self._listen, daemon=True).start()

    def alive(self) -> bool:
        return self.process.poll() is None

    def _listen(self) -> None:
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, 4096, 1)
            except OSError:
                data, fds = b"", []
            with self.changed:
                if not data:
                    self.pids[-1] = (-1, -1)  # wakes every waiter: the zygote is gone
                    self.changed.notify_all()
                    return
                message = json.loads(data)
                if "pid" in message:
                    self.pids[message["job"]] = (message["pid"], fds[0])
                else:
                    self.exits[message["exit"]] = message["code"]
                self.changed.notify_all()

    def fork(self, timeout: float = 120.0) -> tuple[multiprocessing.connection.Connection, int]:
        """A connected, freshly forked worker and its pid."""
        job = next(self.jobs)
        with self.send_lock:
            self.sock.send(json.dumps({"job": job}).encode())
        with self.changed:
            if not self.changed.wait_for(lambda: job in self.pids or -1 in self.pids, timeout):
                raise RuntimeError("the sandbox zygote did not fork a worker in time")
            if job not in self.pids:
                raise RuntimeError("the sandbox zygote exited; it is restarted on the next evaluation")
            pid, fd = self.pids.pop(job)
        return multiprocessing.connection.Connection(fd), pid

    def exit_code(self, pid: int, timeout: float) -> int | None:
        with self.changed:
            self.changed.wait_for(lambda: pid in self.exits, timeout)
            return self.exits.pop(pid, None)


_ZYGOTE_LOCK = threading.Lock()
_ZYGOTE: _Zygote | None = None


def _zygote() -> _Zygote:
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is None or not _ZYGOTE.alive():
            _ZYGOTE = _Zygote()
        return _ZYGOTE


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one candidate evaluation."""

    timeout_s: float = 60.0  # the whole evaluation, every call included
    memory_mb: int = 4096  # address space the candidate may add on top of the warm worker
    output_bytes: int = 8 * 1024 * 1024  # stdout/stderr the worker may write; more fails the write
    keep_output_chars: int = 4000  # what the harness keeps of each stream (head and tail)
    threads: int = 1  # torch threads inside the worker: single-threaded timing is steadier
    reference_calls: int = 3  # timed calls of the reference balancer (0: skip)


@dataclass
class SandboxRun:
    """What came back from one candidate: placements per window or an error line."""

    error: str = ""
    placements: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    call_ns: list[int] = field(default_factory=list)  # the worker's clock, per call
    wall_ns: list[int] = field(default_factory=list)  # the harness's clock, per round trip
    reference_ns: list[int] = field(default_factory=list)
    warmup_ns: int = 0  # the reference's untimed first call (still balancer time, not harness overhead)
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def _read_capped(path: Path, keep: int) -> str:
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            if size <= 2 * keep:
                return fh.read().decode(errors="replace")
            head = fh.read(keep).decode(errors="replace")
            fh.seek(size - keep)
            tail = fh.read(keep).decode(errors="replace")
    except OSError:
        return ""
    return f"{head}\n[... {size - 2 * keep} bytes cut ...]\n{tail}"


def _death_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "the worker stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (memory limit)" if name == "SIGKILL" else ""
        return f"the worker crashed with {name}{hint}"
    return f"the worker exited with code {exitcode} before answering (os._exit or sys.exit in the program?)"


class Sandbox:
    """Runs candidates, one fresh worker process each. Thread-safe: one `run` per calling thread."""

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        reference_code: str | None = None,
        entry: str = "rebalance_experts",
        device: str = "cpu",
    ) -> None:
        self.limits = limits or SandboxLimits()
        self.reference_code = reference_code
        self.entry = entry
        self.device = device

    def run(self, code: str, windows: list[np.ndarray], args: tuple[int, ...]) -> SandboxRun:
        """Call the candidate's entry function once per planning window, in order."""
        with tempfile.TemporaryDirectory(prefix="eplb-sandbox-") as tmp:
            out_path, err_path = Path(tmp, "stdout"), Path(tmp, "stderr")
            result = self._run_worker(code, windows, args, out_path, err_path)
            result.stdout = _read_capped(out_path, self.limits.keep_output_chars)
            result.stderr = _read_capped(err_path, self.limits.keep_output_chars)
        return result

    def _run_worker(
        self, code: str, windows: list[np.ndarray], args: tuple[int, ...], out_path: Path, err_path: Path
    ) -> SandboxRun:
        limits = self.limits
        job = {
            "code": code,
            "entry": self.entry,
            "args": list(args),
            "device": self.device,
            "threads": limits.threads,
            "memory_mb": limits.memory_mb,
            "timeout_s": limits.timeout_s,
            "output_bytes": limits.output_bytes,
            "stdout_path": str(out_path),
            "stderr_path": str(err_path),
            "first_window": np.ascontiguousarray(windows[0]),
            "reference_code": self.reference_code,
            "reference_calls": limits.reference_calls,
        }
        zygote = _zygote()
        deadline = time.monotonic() + limits.timeout_s
        result = SandboxRun()
        try:
            conn, pid = zygote.fork()
        except RuntimeError as exc:
            result.error = f"sandbox unavailable: {exc}"
            return result
        try:
            conn.send(job)
            for header, arrays, wall in self._replies(conn, windows, deadline):
                kind = header.get("type")
                if kind == "error":
                    result.error = str(header.get("error", "unknown error"))[:500]
                    break
                if kind == "ready":
                    result.reference_ns = [int(x) for x in header.get("reference_ns", [])]
                    result.warmup_ns = int(header.get("warmup_ns", 0))
                elif kind == "placement" and len(arrays) == 3:
                    result.placements.append((arrays[0], arrays[1], arrays[2]))
                    result.call_ns.append(int(header["elapsed_ns"]))
                    result.wall_ns.append(wall)
                else:
                    result.error = "the worker sent a message that does not follow the protocol"
                    break
        except TimeoutError:
            result.error = (
                f"timed out after {limits.timeout_s:g} s with {len(result.placements)} of {len(windows)} "
                "windows answered (an endless loop, or a balancer far too slow)"
            )
        except wire.WireError as exc:
            result.error = f"the worker sent an unreadable message: {exc}"
        except (EOFError, OSError):
            result.error = _death_reason(zygote.exit_code(pid, 5.0))
        finally:
            conn.close()
            _kill_group(pid)
        return result

    def _replies(
        self,
        conn: multiprocessing.connection.Connection,
        windows: list[np.ndarray],
        deadline: float,
    ) -> Iterator[tuple[dict, list[np.ndarray], int]]:
        """Yield decoded replies; send the next window only after the previous one was answered."""
        next_index = 1
        sent_at = time.perf_counter_ns()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not conn.poll(remaining):
                raise TimeoutError
            message = conn.recv_bytes(wire.MAX_MESSAGE_BYTES)
            wall = time.perf_counter_ns() - sent_at
            header, arrays = wire.decode(message)
            yield header, arrays, wall
            kind = header.get("type")
            if kind == "ready":
                sent_at = time.perf_counter_ns()  # the first window travelled with the job
                continue
            if kind != "placement":
                return
            if next_index >= len(windows):
                conn.send_bytes(wire.encode({"type": "stop"}))
                return
            sent_at = time.perf_counter_ns()
            conn.send_bytes(wire.encode({"type": "window", "index": next_index}, [windows[next_index]]))
            next_index += 1


def _kill_group(pid: int) -> None:
    """Kill the worker's whole process group: the worker and anything it managed to start."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
