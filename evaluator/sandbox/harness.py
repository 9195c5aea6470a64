"""Run an untrusted balancer in a separate process and bring back only its placements.

Each candidate gets a fresh worker forked from a warm zygote (torch already imported) that runs inside
bubblewrap (see `bwrap`), in namespaces of its own (see `confine`), with an address-space cap, an
output cap and an audit hook (see `worker`). The harness streams planning windows one at a time, times
every call itself around its round trip, and decodes replies without pickle against the exact layout
it expects (see `wire`). Scoring happens here, outside the worker, on windows the worker never received.

A failure of the machinery (a zygote that died or stopped answering, a standby worker that died before
taking its job) restarts the zygote and retries the evaluation once; a second failure raises
`SandboxError` rather than blaming the program.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Callable, Iterator

import numpy as np

from evaluator.contract import validate_placement
from evaluator.sandbox import bwrap, transport, wire
from evaluator.sandbox.zygote import CONTROL_FD_ENV, ISOLATE_ENV, MAX_THREADS, THREAD_LIMIT_EXIT
from evolve.errors import UserError

STARTUP_TIMEOUT_S = 180.0  # the zygote imports torch once; a loaded machine may take a while
ANSWER_TIMEOUT_S = 15.0  # a zygote request or a worker's acceptance of its job: milliseconds when healthy


class SandboxError(UserError):
    """The sandbox itself failed (twice): not the program's fault, and never archived as its error."""


class _MachineryFailure(Exception):
    """A failure of the zygote or a standby worker, before the candidate's code was involved."""


def _spawn_kept(argv: list[str], env: dict[str, str], fd: int) -> subprocess.Popen:
    """Start `argv` from a thread that lives as long as the process does.

    bwrap's --die-with-parent follows the *thread* that started it; a campaign's worker thread may end
    at any time, so the zygote must not be tied to it."""
    box: dict[str, object] = {}
    started = threading.Event()

    def keep() -> None:
        try:
            box["process"] = subprocess.Popen(argv, pass_fds=[fd], env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            box["error"] = exc
        started.set()
        if "process" in box:
            box["process"].wait()  # type: ignore[union-attr]

    threading.Thread(target=keep, daemon=True, name="sandbox-zygote").start()
    started.wait()
    if "error" in box:
        raise _MachineryFailure(f"the sandbox could not start ({box['error']})")
    return box["process"]  # type: ignore[return-value]


class _Zygote:
    """Client of the warm `evaluator.sandbox.zygote` process: asks it to fork workers, learns their exit codes."""

    def __init__(self, isolate: bool, device: str) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        extra = {CONTROL_FD_ENV: str(theirs.fileno()), ISOLATE_ENV: "1" if isolate else "0"}
        argv = [sys.executable, "-s", "-m", "evaluator.sandbox.zygote"]
        if isolate:
            env = dict(os.environ)  # bwrap itself; it clears the environment for the zygote
            argv = bwrap.command(argv, device, extra)
        else:
            env = bwrap.environment(extra)  # no isolation, but still no API keys
            if "LD_LIBRARY_PATH" in os.environ:
                env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
        self.process = _spawn_kept(argv, env, theirs.fileno())
        theirs.close()
        self.sock = ours
        self.send_lock = threading.Lock()
        self.changed = threading.Condition()
        self.ready = False
        self.gone = False
        self.handed: dict[int, tuple[int, int, int]] = {}  # job -> (pid, worker socket fd, pidfd)
        self.prefetched: list[int] = []  # jobs asked for ahead of need, taken by the next `fork`
        self.exits: dict[int, int] = {}
        self.jobs = itertools.count()
        threading.Thread(target=self._listen, daemon=True, name="sandbox-listener").start()
        with self.changed:
            self.changed.wait_for(lambda: self.ready or self.gone, STARTUP_TIMEOUT_S)
            if not self.ready:
                self.close()
                raise _MachineryFailure(f"the sandbox's zygote did not start within {STARTUP_TIMEOUT_S:g} s")

    def alive(self) -> bool:
        return not self.gone and self.process.poll() is None

    def _listen(self) -> None:
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, 4096, 2)
                message = json.loads(data) if data else None
            except (OSError, ValueError):
                message, fds = None, []
            with self.changed:
                if not isinstance(message, dict):
                    for fd in fds:
                        os.close(fd)
                    self.gone = True  # wakes every waiter: the zygote is gone
                    self.changed.notify_all()
                    return
                if message.get("ready"):
                    self.ready = True
                elif "job" in message and len(fds) == 2:
                    for fd in fds:  # received descriptors are inheritable; a worker held ahead of need must
                        os.set_inheritable(fd, False)  # not leak into a process this harness starts
                    pid = int(message["pid"])
                    # an exit reported earlier under this pid was a previous worker's (the zygote reports an
                    # exit before the pid can be reused): it must not be read as this one's
                    self.exits.pop(pid, None)
                    self.handed[int(message["job"])] = (pid, fds[0], fds[1])
                elif "exit" in message:
                    self.exits[int(message["exit"])] = int(message["code"])
                    while len(self.exits) > 1024:  # exits nobody asked for (healthy workers): forget the oldest
                        del self.exits[next(iter(self.exits))]
                self.changed.notify_all()

    def _send(self, message: dict) -> None:
        with self.send_lock:
            try:
                self.sock.send(json.dumps(message).encode())
            except OSError as exc:
                raise _MachineryFailure(f"the sandbox's zygote is gone ({exc})") from None

    def fork(self) -> tuple[int, int, int]:
        """A freshly forked worker that has never been given a job: its pid, the harness's end of its
        socket, and a pidfd. One asked for ahead (`ask_ahead`) is taken when it has arrived; otherwise
        one is asked for and waited on."""
        with self.changed:
            job = next((j for j in self.prefetched if j in self.handed), None)
            if job is not None:
                self.prefetched.remove(job)
                return self.handed.pop(job)
        job = next(self.jobs)
        self._send({"job": job})
        with self.changed:
            self.changed.wait_for(lambda: job in self.handed or self.gone, ANSWER_TIMEOUT_S)
            worker = self.handed.pop(job, None)
        if worker is None:
            raise _MachineryFailure("the sandbox's zygote " + (
                "exited" if self.gone else f"did not answer within {ANSWER_TIMEOUT_S:g} s"))
        return worker

    def ask_ahead(self) -> int:
        """Ask for the worker the next evaluation will take, without waiting: the zygote forks it while
        this evaluation runs. `replenished` tells whether it came."""
        job = next(self.jobs)
        with self.changed:
            self.prefetched.append(job)
        try:
            self._send({"job": job})
        except _MachineryFailure:
            pass  # `replenished` reports it
        return job

    def replenished(self, job: int, timeout: float) -> bool:
        """Whether the worker asked for as `job` has come (or was already taken by another evaluation)."""
        with self.changed:
            return self.changed.wait_for(
                lambda: job in self.handed or job not in self.prefetched or self.gone, timeout) and not self.gone

    def kill(self, pid: int, pidfd: int) -> None:
        """Kill a worker: the outer process by its pidfd (its namespace dies with it), its group by the zygote."""
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except OSError:
            pass
        os.close(pidfd)
        try:
            self._send({"kill": pid})
        except _MachineryFailure:
            pass

    def freeze(self, pid: int) -> None:
        """Have the zygote stop a finished worker's processes until `dismiss` (see `zygote._Workers.freeze`)."""
        try:
            self._send({"freeze": pid})
        except _MachineryFailure:
            pass

    def dismiss(self, pid: int, pidfd: int) -> None:
        """Have the zygote kill a worker that finished its job (its namespace dies with its outer process).

        No signal from here: `pidfd_send_signal` holds the interpreter lock, and the scheduler often runs
        the dying worker at once on the signalling thread's core, so every thread of the harness waited
        for the worker's exit. A zygote that is gone took its whole sandbox with it."""
        os.close(pidfd)
        try:
            self._send({"kill": pid})
        except _MachineryFailure:
            pass

    def exit_code(self, pid: int, timeout: float) -> int | None:
        with self.changed:
            self.changed.wait_for(lambda: pid in self.exits or self.gone, timeout)
            return self.exits.pop(pid, None)

    def close(self) -> None:
        try:
            self.process.kill()  # bwrap's init dies with it, and every process of the sandbox with that
        except OSError:
            pass
        self.sock.close()
        with self.changed:
            for _pid, fd, pidfd in self.handed.values():  # answers that came after their request timed out
                os.close(fd)
                os.close(pidfd)
            self.handed.clear()


_ZYGOTE_LOCK = threading.Lock()
_ZYGOTES: dict[tuple[bool, str], _Zygote] = {}


def _zygote(isolate: bool, device: str) -> _Zygote:
    key = (isolate, device.split(":")[0])
    with _ZYGOTE_LOCK:
        zygote = _ZYGOTES.get(key)
        if zygote is None or not zygote.alive():
            if zygote is not None:
                zygote.close()
            zygote = _ZYGOTES[key] = _Zygote(isolate, device)
        return zygote


def _discard(zygote: _Zygote) -> None:
    """Throw a broken zygote away (killing its whole sandbox); the next evaluation starts a fresh one."""
    with _ZYGOTE_LOCK:
        for key, known in list(_ZYGOTES.items()):
            if known is zygote:
                del _ZYGOTES[key]
    zygote.close()


class _Releaser:
    """Finished workers, killed when the harness has nothing else to do.

    A worker's exit (three processes, each with the zygote's whole address space, and their namespaces)
    keeps both cores of a small machine busy for milliseconds. Killed as soon as its last reply came, it
    slowed the harness's contract check, simulation and locality to twice their time; killed by the
    evaluating thread, it often took that thread's core at once (the scheduler runs a woken process
    early), and `pidfd_send_signal` holds the interpreter lock meanwhile. So a finished worker waits here
    until the next evaluation has handed its own worker the job and waits for it (`run_pending`), or at
    most `LATEST_S` when no evaluation comes, then the zygote kills it."""

    LATEST_S = 0.05

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.pending: list[tuple[float, Callable[[], None]]] = []  # (kill by, release), oldest first
        self.running = 0
        self.thread: threading.Thread | None = None

    def submit(self, release: Callable[[], None]) -> None:
        with self.lock:
            self.pending.append((time.monotonic() + self.LATEST_S, release))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._serve, daemon=True, name="sandbox-releaser")
                self.thread.start()
            self.changed.notify_all()

    def run_pending(self) -> None:
        """Kill every finished worker now, on the calling thread."""
        with self.lock:
            batch, self.pending = self.pending, []
            self.running += len(batch)
        self._run(batch)

    def _run(self, batch: list[tuple[float, Callable[[], None]]]) -> None:
        for _, release in batch:
            try:
                release()
            except Exception:  # noqa: BLE001 - a worker that is gone already: nothing left to kill
                pass
        with self.lock:
            self.running -= len(batch)
            self.changed.notify_all()

    def _serve(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                while not self.pending or self.pending[0][0] > now:
                    self.changed.wait(self.pending[0][0] - now if self.pending else None)
                    now = time.monotonic()
                due = [item for item in self.pending if item[0] <= now]
                self.pending = [item for item in self.pending if item[0] > now]
                self.running += len(due)
            self._run(due)

    def drain(self, timeout: float = 10.0) -> None:
        """Kill every finished worker now and wait until none is left being killed."""
        self.run_pending()
        with self.lock:
            self.changed.wait_for(lambda: not self.pending and self.running == 0, timeout)


_RELEASER = _Releaser()


def drain_releases() -> None:
    """Wait until every finished worker is killed (tests that count processes, `shutdown`)."""
    _RELEASER.drain()


def shutdown() -> None:
    """Stop every zygote this process started, with its whole sandbox; the next evaluation starts afresh."""
    drain_releases()
    with _ZYGOTE_LOCK:
        zygotes = list(_ZYGOTES.values())
        _ZYGOTES.clear()
    for zygote in zygotes:
        zygote.close()


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
    wall_ns: list[int] = field(default_factory=list)  # the harness's clock, per call (see docs/sandbox.md)
    reference_ns: list[int] = field(default_factory=list)  # the reference's calls, timed the same way
    warmup_ns: int = 0  # the untimed first call (balancer time, but not part of the runtime figures)
    reference_cost_ns: int = 0  # balancer time spent here measuring the reference (0 once it is cached)
    isolated: bool = True
    stages_ns: dict[str, int] = field(default_factory=dict)  # the harness's own time by stage (bench_sandbox)
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    _release: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def release(self) -> None:
        """Hand the worker `Sandbox.run(keep_worker=True)` left stopped to `_Releaser`, which has it killed
        when the next evaluation hands over its job, or 50 ms later (nothing otherwise); idempotent."""
        release, self._release = self._release, None
        if release is not None:
            _RELEASER.submit(release)

    @property
    def call_ns(self) -> list[int]:
        """Runtime per call: the harness's round trip, the only clock the candidate cannot reach."""
        return self.wall_ns


def printable(text: str, keep: str = "\t") -> str:
    """A worker's text made safe to print, store and show: lone surrogates (which no UTF-8 file, terminal
    or SQLite column accepts), control characters (terminal escapes, NUL) and invisible format characters
    (bidirectional overrides) each become U+FFFD; `keep` lists the control characters left alone."""
    return "".join(
        c if c in keep or unicodedata.category(c) not in ("Cc", "Cf", "Cs") else "\ufffd" for c in text
    )


@contextlib.contextmanager
def _output_files() -> Iterator[tuple[int, int]]:
    """Descriptors of two anonymous in-memory files (memfd) for a worker's stdout and stderr.

    Files in /tmp cost 2.8 ms per evaluation here (creating and releasing an inode waits on the ext4
    journal); these cost microseconds. The worker's output cap (RLIMIT_FSIZE) limits them as it limits
    any regular file, and they vanish when the harness and the worker have both closed them."""
    fds: list[int] = []
    try:
        for name in ("eplb-out", "eplb-err"):
            fds.append(os.memfd_create(name, os.MFD_CLOEXEC))
        yield fds[0], fds[1]
    finally:
        for fd in fds:
            os.close(fd)


def _read_capped(fd: int, keep: int) -> str:
    try:
        size = os.fstat(fd).st_size
        if size <= 2 * keep:
            return printable(os.pread(fd, size, 0).decode(errors="replace"), "\t\n")
        head = printable(os.pread(fd, keep, 0).decode(errors="replace"), "\t\n")
        tail = printable(os.pread(fd, keep, size - keep).decode(errors="replace"), "\t\n")
    except OSError:
        return ""
    return f"{head}\n[... {size - 2 * keep} bytes cut ...]\n{tail}"


def _death_reason(exitcode: int | None) -> str:
    """Why the candidate's process ended, from the worker's exit code (see `zygote._pass_on`)."""
    if exitcode is None:
        return "the worker stopped answering"
    if exitcode == THREAD_LIMIT_EXIT:
        return f"the program started more than {MAX_THREADS} threads, the most the sandbox allows"
    if exitcode >= 128:
        try:
            name = signal.Signals(exitcode - 128).name
        except ValueError:
            name = f"signal {exitcode - 128}"
        hint = " (memory limit)" if name == "SIGKILL" else ""
        return f"the worker crashed with {name}{hint}"
    return f"the worker exited with code {exitcode} before answering (os._exit or sys.exit in the program?)"


def _variants(window: np.ndarray, count: int) -> list[np.ndarray]:
    """Distinct copies of a window (i + 1 counts added to its busiest cell), so no call is answered from a memo."""
    out = []
    flat_max = int(np.argmax(window))
    for i in range(count):
        copy = window.copy()
        copy.flat[flat_max] += i + 1
        out.append(copy)
    return out


def _compact(placement: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A reply's arrays, log2phy cut to its widest expert when only -1 padding follows; None when something
    else follows (the contract requires -1 past every expert's count: the placement is invalid).

    The contract lets log2phy be as wide as num_replicas: kept whole, a program padding it fully made the
    harness hold 34 MB per window on the standard shape. A cut reply is copied, so the padding goes with
    its message; an uncut, aligned one stays as views of its message, which holds nothing but the three
    arrays and their header (`wire.decode` refuses trailing bytes), and is never written to. A reply with
    anything but -1 past the widest expert is refused when it comes (None), never kept whole: otherwise one
    value in its last column kept the full width of every window until the contract check."""
    phy2log, log2phy, logcnt = placement
    width = min(max(int(logcnt.max(initial=1)), 1), log2phy.shape[2])
    if width < log2phy.shape[2]:
        if not bool((log2phy[:, :, width:] == -1).all()):
            return None
        return phy2log.copy(), log2phy[:, :, :width].copy(), logcnt.copy()
    if not (phy2log.flags.aligned and log2phy.flags.aligned and logcnt.flags.aligned):
        # a reply whose header was not padded (`wire.encode` pads): numpy reads misaligned int64 through
        # slow buffered loops, five times slower in the contract check, so take aligned copies
        return phy2log.copy(), log2phy.copy(), logcnt.copy()
    return phy2log, log2phy, logcnt


def _compact_bytes(layout: wire.Layout) -> int:
    """The largest reply a valid placement needs: log2phy no wider than the most replicas one expert can
    have (R - E + 1), the width the worker cuts it to (see `worker._materialise`)."""
    width = max(1, layout.replicas - layout.experts + 1)
    cells = layout.layers * layout.replicas + layout.layers * layout.experts * (width + 1)
    return 4 + wire.HEADER_BYTES + wire.INT64.itemsize * cells


_TOKEN_BYTES = 8  # random bytes of a window's token (sent as hex)
_TOKEN_PLACE = "0" * (2 * _TOKEN_BYTES)  # where the token goes in a window's message, framed ahead


def _placement_prefix(index: int, token: str) -> bytes:
    """How a placement reply for window `index` begins (after the header's length), as `wire.encode` writes it."""
    return json.dumps({"header": {"type": "placement", "index": index, "token": token}}).encode()[:-1]


def _warm_up_window(window: np.ndarray) -> np.ndarray:
    """A window of the same shape and magnitudes, its cells drawn at random from `window`'s: realistic
    work for the warm-up, yet no help for any timed call. (A copy of window 0 with one count added let
    a program answer window 0 from what it computed, untimed, in the warm-up.)"""
    rng = np.random.default_rng(window.size)
    return rng.choice(window.ravel(), size=window.shape).astype(window.dtype, copy=False)


class _ProgramFailure(Exception):
    """The candidate's own failure, one line."""


_KEPT_WINDOW_LISTS = 4  # a task's full and first-stage windows, the reference's copies: a few lists at most
_REFERENCE_LOCK = threading.Lock()
_REFERENCE_TIMES: dict[str, list[int]] = {}  # per harness process: the reference is timed once per setting


class Sandbox:
    """Runs candidates, one fresh worker process each. Thread-safe: one `run` per calling thread.

    `isolate=False` (the explicit opt-out) runs without bubblewrap and namespaces: only the audit hook and
    the resource limits stand between a candidate and the machine."""

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        reference_code: str | None = None,
        entry: str = "rebalance_experts",
        device: str = "cpu",
        isolate: bool = True,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self.reference_code = reference_code
        self.entry = entry
        self.device = device
        self.isolate = isolate
        self._reference_key: tuple[np.ndarray, tuple[int, ...], str] | None = None
        self._messages: list[tuple[list[np.ndarray], list[tuple[bytes, int]]]] = []  # see `_window_messages`
        self._messages_lock = threading.Lock()
        if isolate:
            reason = bwrap.probe()
            if reason:
                raise UserError(bwrap.unavailable_message(reason))

    def run(self, code: str, windows: list[np.ndarray], args: tuple[int, ...], keep_worker: bool = False) -> SandboxRun:
        """Call the candidate's entry function once per planning window, in order.

        The worker is killed before this returns, unless `keep_worker`: then a worker that answered every
        window stays blocked, waiting for a window that never comes, until the caller's `release()`. A
        killed worker's exit (its three processes, its namespaces) keeps the kernel busy for milliseconds,
        and a caller that checks and scores the placements at that moment took twice as long to do so on
        two cores; one that releases afterwards leaves that work to overlap the next candidate's loading."""
        # The reference first (timed once per process): never beside this candidate's finished worker, which
        # is only stopped, and a stop waits for the system call under way (filling 2 GB of memory went on
        # for 0.6 s of CPU), so it could have slowed the reference, and raised its own speed ratio.
        reference = self.reference_times(windows[0], args)
        result = self._run_retrying(code, windows, args, keep_worker)
        if result.ok:
            result.reference_ns, result.reference_cost_ns = reference
        return result

    def reference_times(self, first: np.ndarray, args: tuple[int, ...]) -> tuple[list[int], int]:
        """The reference balancer's call times on distinct copies of the first window, and what measuring
        them cost now: measured once per harness process in a worker that never loads candidate code."""
        calls = self.limits.reference_calls
        if not self.reference_code or calls <= 0:
            return [], 0
        known = self._reference_key
        if known is not None and known[0] is first and known[1] == args:
            key = known[2]  # the same window object as last time (a task passes its own, never changed)
        else:
            key = hashlib.sha256(
                json.dumps([self.reference_code, self.entry, self.device, self.isolate, self.limits.threads,
                            list(args), calls, first.shape]).encode() + np.ascontiguousarray(first).tobytes()
            ).hexdigest()
            self._reference_key = (first, tuple(args), key)
        with _REFERENCE_LOCK:
            if key in _REFERENCE_TIMES:
                return _REFERENCE_TIMES[key], 0
            run = self._run_retrying(self.reference_code, _variants(first, calls), args)
            times = run.wall_ns if run.ok else []
            _REFERENCE_TIMES[key] = times
            return times, sum(run.wall_ns) + run.warmup_ns

    def _run_retrying(self, code: str, windows: list[np.ndarray], args: tuple[int, ...],
                      keep_worker: bool = False) -> SandboxRun:
        failure = ""
        for _attempt in range(2):
            zygote = None
            try:
                zygote = _zygote(self.isolate, self.device)
                return self._run_once(zygote, code, windows, args, keep_worker)
            except _MachineryFailure as exc:
                failure = str(exc)
                if zygote is not None:
                    _discard(zygote)
        raise SandboxError(
            f"the sandbox failed twice ({failure}); this is not the program's fault: check free memory and "
            "processes on this machine, then run again"
        )

    def _run_once(self, zygote: _Zygote, code: str, windows: list[np.ndarray], args: tuple[int, ...],
                  keep_worker: bool = False) -> SandboxRun:
        result = SandboxRun(isolated=self.isolate)
        started = time.perf_counter_ns()
        with _output_files() as (out, err):
            pid, fd, pidfd = zygote.fork()
            result.stages_ns["worker"] = time.perf_counter_ns() - started
            sock = socket.socket(fileno=fd)
            try:
                socket.send_fds(sock, [b"S"], [out, err])
            except OSError:
                sock.close()
                zygote.kill(pid, pidfd)
                raise _MachineryFailure("the standby worker was gone before it got its job") from None
            conn = Connection(sock.detach())
            # the next worker is asked for once this one has loaded its program (see `_replies`): its fork
            # then overlaps the untimed warm-up call, not the loading nor the handing over
            ahead: list[int] = []

            def release() -> None:
                conn.close()
                zygote.kill(pid, pidfd)

            def dismiss() -> None:  # after a complete run, off the evaluating thread (see `_Releaser`)
                conn.close()  # a worker that is not hostile ends at once, on the end of its socket
                zygote.dismiss(pid, pidfd)

            try:
                self._serve(conn, zygote, pid, code, windows, args, result, lambda: ahead.append(zygote.ask_ahead()))
            except BaseException:
                release()
                raise
            finishing = time.perf_counter_ns()
            if keep_worker and result.ok:
                zygote.freeze(pid)
                result._release = dismiss
            else:
                release()
            result.stdout = _read_capped(out, self.limits.keep_output_chars)
            result.stderr = _read_capped(err, self.limits.keep_output_chars)
        upcoming = ahead[0] if ahead else zygote.ask_ahead()  # a program that failed before it was ready
        if not zygote.replenished(upcoming, ANSWER_TIMEOUT_S):
            # this evaluation's worker was sound (its result stands), but the zygote no longer forks:
            # replace it now, so the next evaluation finds a fresh one
            _discard(zygote)
            try:
                _zygote(self.isolate, self.device)
            except _MachineryFailure:
                pass  # the next evaluation tries again, and retries as usual
        result.stages_ns["finish"] = time.perf_counter_ns() - finishing
        return result

    def _serve(
        self,
        conn: Connection,
        zygote: _Zygote,
        pid: int,
        code: str,
        windows: list[np.ndarray],
        args: tuple[int, ...],
        result: SandboxRun,
        on_ready: Callable[[], None],
    ) -> None:
        limits = self.limits
        layers, experts = windows[0].shape
        job = {
            "code": code, "entry": self.entry, "args": list(args), "shape": [layers, experts], "device": self.device,
            "threads": limits.threads, "memory_mb": limits.memory_mb, "timeout_s": limits.timeout_s,
            "output_bytes": limits.output_bytes,
        }
        layout = wire.Layout(layers, experts, int(args[0]))
        handing = time.perf_counter_ns()
        try:
            os.set_blocking(conn.fileno(), False)  # every read and write has a deadline
            answer_by = time.monotonic() + ANSWER_TIMEOUT_S
            # the job is pickled (the worker trusts the harness); a program larger than the socket's buffer
            # must not block us on a standby that is stopped
            transport.send(conn.fileno(), pickle.dumps(job), answer_by)
            # a finished worker's exit overlaps this one's taking its job, not this candidate's calls (it
            # took up to 16 ms, and after the warm-up it still slowed the first timed call by 3 ms)
            _RELEASER.run_pending()
            header, _ = self._receive(conn, layout, answer_by)
            if header.get("type") != "accepted":
                raise wire.WireError("no acceptance")
        except (EOFError, OSError, TimeoutError, wire.WireError):  # no candidate code has run yet
            raise _MachineryFailure("the standby worker was dead or stopped before it took its job") from None
        result.stages_ns["job"] = time.perf_counter_ns() - handing
        deadline = time.monotonic() + limits.timeout_s
        try:
            for index, placement, wall in self._replies(conn, windows, layout, deadline, result.stages_ns,
                                                            on_ready):
                if index < 0:
                    result.warmup_ns = wall
                    continue
                kept = _compact(placement)
                if kept is None:  # the contract check's own words for this window
                    problem = validate_placement(*placement, layers, experts, layout.replicas)
                    raise _ProgramFailure(f"window {index}: {problem or 'log2phy holds values past logcnt'}")
                result.placements.append(kept)
                result.wall_ns.append(wall)
        except _ProgramFailure as exc:
            result.error = str(exc)
        except TimeoutError:
            result.error = (
                f"timed out after {limits.timeout_s:g} s with {len(result.placements)} of {len(windows)} "
                "windows answered (an endless loop, or a balancer far too slow)"
            )
        except wire.WireError as exc:
            result.error = f"the worker sent a message that breaks the protocol: {exc}"[:500]
        except (EOFError, OSError) as exc:
            if isinstance(exc, transport.MessageTooLarge):
                result.error = (f"the worker sent a reply larger than {layout.max_bytes} bytes, the most a "
                                "placement needs")
            else:
                code_ = zygote.exit_code(pid, 5.0)
                if not zygote.alive() or (code_ is not None and code_ < 0):  # the outer process was killed
                    raise _MachineryFailure(
                        "the zygote or a worker's outer process died during the evaluation") from None
                result.error = _death_reason(code_)

    @staticmethod
    def _receive(conn: Connection, layout: wire.Layout, deadline: float) -> tuple[dict, list[np.ndarray]]:
        return wire.decode(transport.receive(conn.fileno(), layout.max_bytes, deadline), layout)

    def _replies(
        self, conn: Connection, windows: list[np.ndarray], layout: wire.Layout, deadline: float,
        stages_ns: dict[str, int], on_ready: Callable[[], None],
    ) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray], int]]:
        """Yield (window index, placement, round-trip time); a window is sent only after the last was answered.

        First comes an untimed warm-up call (index -1): a fresh process pays page faults until malloc has
        grown its heap, and the reference's figure excludes the same warm-up. Its input is unrelated to
        every window (see `_warm_up_window`), so the work of this untimed call cannot answer a timed one."""
        loading = time.perf_counter_ns()
        header, _ = self._receive(conn, layout, deadline)
        stages_ns["load"] = time.perf_counter_ns() - loading
        self._expect(header, "ready")
        on_ready()

        # Replies are read whole on arrival but decoded after the last call: decoding between calls ran the
        # harness's Python on caches the candidate had just filled, ten times slower than in one batch (about
        # 0.13 ms a reply). Only a reply that begins as a placement for the window asked, and is no larger
        # than a valid placement can be, waits; anything else (an error, a reply too wide to hold on to) is
        # decoded at once, after those before it, and ends the run as before.
        waiting: list[tuple[int, str, bytearray, int]] = []
        compact_limit = _compact_bytes(layout)
        # Every window carries a fresh random token that its reply must repeat. A reply is timed from its
        # window's sending, so a worker must not be able to write it sooner: one that wrote each placement
        # again, at once, as the next window's reply had that call timed at 50 us although it slept 40 ms (and
        # placements computed in the untimed warm-up call could have answered every timed call so).
        tokens = os.urandom(_TOKEN_BYTES * (len(windows) + 1)).hex()
        for index, (framed, at) in enumerate(self._window_messages(windows), start=-1):
            token = tokens[2 * _TOKEN_BYTES * (index + 1) : 2 * _TOKEN_BYTES * (index + 2)]
            sent_at = time.perf_counter_ns()
            try:
                transport.send_framed(conn.fileno(), framed, deadline, (at, token.encode()))
                reply = transport.receive(conn.fileno(), layout.max_bytes, deadline)
            except (OSError, EOFError):  # a timeout, a crash: the replies before come first, as they would have
                for item in waiting:  # (their own faults, and the count of windows answered in a timeout's line)
                    yield self._decoded(*item, layout)
                raise
            wall = time.perf_counter_ns() - sent_at
            if len(reply) <= compact_limit and reply.startswith(_placement_prefix(index, token), 4):
                waiting.append((index, token, reply, wall))
                continue
            for item in waiting:
                yield self._decoded(*item, layout)
            waiting.clear()
            yield self._decoded(index, token, reply, wall, layout)
        for item in waiting:
            yield self._decoded(*item, layout)
        # no word that the job is over: the worker waits for a window that never comes until it is killed
        # (see `Sandbox.run`), so its exit does not fall on the harness's checks

    def _decoded(self, index: int, token: str, reply: bytearray, wall: int, layout: wire.Layout,
                 ) -> tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray], int]:
        header, arrays = wire.decode(reply, layout)
        self._expect(header, "placement")
        if header.get("index") != index:
            raise wire.WireError(f"a reply for window {header.get('index')!r} came when window {index} was asked")
        if header.get("token") != token:
            raise wire.WireError(f"the reply for window {index} does not repeat the token sent with that window "
                                 "(a reply written before its window came?)")
        return index, (arrays[0], arrays[1], arrays[2]), wall

    def _window_messages(self, windows: list[np.ndarray]) -> list[tuple[bytes, int]]:
        """The framed messages of the warm-up call and of every window, in order, each with the offset of its
        token's place (filled in as it is sent): encoded once per list of windows (a task passes its own
        lists, never changed), so no candidate's clock runs while a window is encoded and no evaluation
        encodes the same windows again."""
        with self._messages_lock:
            for i, (known, messages) in enumerate(self._messages):
                if known is windows:
                    self._messages.append(self._messages.pop(i))  # most recently used last
                    return messages
        warm_up = _warm_up_window(windows[0])
        messages = []
        for index, window in [(-1, warm_up), *enumerate(windows)]:
            framed = transport.frame(wire.encode({"token": _TOKEN_PLACE, "type": "window", "index": index}, [window]))
            messages.append((framed, framed.index(b'"token": "') + len(b'"token": "')))
        with self._messages_lock:
            self._messages.append((windows, messages))
            del self._messages[:-_KEPT_WINDOW_LISTS]
        return messages

    @staticmethod
    def _expect(header: dict, kind: str) -> None:
        got = header.get("type")
        if got == "error":
            error = header.get("error")
            if not isinstance(error, str) or not error.strip():
                raise wire.WireError("an error message without a text")
            raise _ProgramFailure(printable(error.strip().splitlines()[0][:500]))
        if got != kind:
            raise wire.WireError(f"expected a '{kind}' message, got {str(got)[:40]!r}")
