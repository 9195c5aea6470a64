"""More hostile programs against the isolated sandbox: replies that never finish, files left for the next
candidate, process creation with the audit hook off, texts made to break a terminal or the archive.
Each is contained and the next innocent program in the same harness scores normally."""
from __future__ import annotations

import sqlite3
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from evaluator.sandbox import bwrap, harness, wire
from evaluator.task import EplbTask
from tests.evaluator_helpers import SEED_CODE, small_task
from tests.test_sandbox_attacks import PRELUDE, assert_innocent_scores, hostile, tags


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> EplbTask:
    return small_task(tmp_path_factory.mktemp("redteam"), timeout_s=4.0)


SLOW_REPLY = r'''
import struct, time
def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):
    conn = sys._getframe(1).f_locals["conn"]  # the worker's reply socket
    os.write(conn.fileno(), struct.pack("!i", 4096) + b"{")  # a length, one byte, then nothing
    time.sleep(3600)
'''


def test_a_reply_that_never_finishes_cannot_hold_the_harness(task: EplbTask) -> None:
    result = task.evaluate(SEED_CODE + PRELUDE + SLOW_REPLY)
    assert not result.correct
    assert result.error.startswith("timed out after 4 s with 0 of"), result.error
    assert_innocent_scores(task)


PLANT = r'''
def _plant(path):
    with open(path, "w") as fh:
        fh.write("raise RuntimeError('planted by an earlier candidate')\n")
for _tag, _path in [("TMP", "/tmp/statistics.py"), ("CWD", "statistics.py"), ("SHM", "/dev/shm/statistics.py"),
                    ("ROOT", "/statistics.py"), ("DEV", "/dev/statistics.py")]:
    _try(_tag, lambda: _plant(_path))
'''

LOOK = r'''
import os
print("SEEN:" + repr(sorted(os.listdir("/scratch")) + sorted(os.listdir("/dev/shm"))
                    + sorted(os.listdir(os.getcwd()))), flush=True)
import statistics
'''


def test_no_file_reaches_the_next_candidate(task: EplbTask) -> None:
    """/scratch, /dev/shm and the working directory are the worker's own; /, /dev and /tmp are read-only."""
    planted = task.evaluate(hostile(PLANT))
    assert planted.correct, planted.error
    found = tags(planted)
    assert {found[t] for t in ("TMP", "CWD", "SHM", "ROOT", "DEV")} == {"FAIL"}, planted.stdout
    after = task.evaluate(SEED_CODE + LOOK)
    assert after.correct, after.error
    assert "SEEN:[]" in after.stdout
    assert_innocent_scores(task)


FORKS = r'''
import ctypes, threading
_libc = ctypes.CDLL(None, use_errno=True)
def _raw(nr, *args):
    pid = _libc.syscall(nr, *args)
    if pid == 0:
        os._exit(0)  # a child that got through: gone at once
    if pid < 0:
        raise OSError(ctypes.get_errno(), "refused")
    return pid
if os.getpid() == 2:  # only inside the sandbox's own PID namespace
    _try("FORK", os.fork)
    _try("RAWFORK", lambda: _raw(57))
    _try("CLONE", lambda: _raw(56, 17, 0, 0, 0, 0))  # SIGCHLD: a process, not a thread
    _try("CLONE3", lambda: _raw(435, 0, 0))
    def _call(nr, *args):
        if _libc.syscall(nr, *args) < 0:
            raise OSError(ctypes.get_errno(), "refused")
    _try("KEYCTL", lambda: _call(250, 0, -3, 0))  # the session keyring's id
    _try("IO_URING", lambda: _call(425, 1, ctypes.create_string_buffer(120)))
    _try("INOTIFY", lambda: _call(294, 0))  # instances count against the host root's quota of 128
    _seen = []
    def _thread():
        _t = threading.Thread(target=lambda: _seen.append(1))
        _t.start()
        _t.join()
        return _seen
    _try("THREAD", _thread)
'''


def test_no_process_can_be_started_even_with_the_hook_off(task: EplbTask) -> None:
    """A fork bomb would take the host's pids (every process of a namespace holds one): the syscall filter
    refuses process creation, threads still work."""
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("the raw syscall numbers below are x86_64's")
    result = task.evaluate(hostile(FORKS))
    assert result.correct, result.error
    found = tags(result)
    assert found["HOOKCHECK"] == "OK" and found["THREAD"] == "OK", result.stdout
    blocked = ("FORK", "RAWFORK", "CLONE", "CLONE3", "KEYCTL", "IO_URING", "INOTIFY")
    assert {found[t] for t in blocked} == {"FAIL"}, result.stdout
    assert_innocent_scores(task)


NASTY = "\ud800 \x1b[2J\x1b]0;owned\x07 \u202e<script>alert(1)</script> \x00 end"


def test_worker_texts_cannot_break_a_terminal_or_the_archive(task: EplbTask) -> None:
    program = f"import sys\nsys.stdout.write({NASTY.replace(chr(0xD800), '')!r} + '\\n')\nraise ValueError({NASTY!r})\n"
    result = task.evaluate(program)
    assert not result.correct and result.error.startswith("program raised while loading: ValueError")
    for text in (result.error, result.stdout):
        assert "<script>" in text  # the words stay; escaping HTML is the page's job
        assert not [c for c in text if c not in "\n\t" and unicodedata.category(c) in ("Cc", "Cf", "Cs")], repr(text)
        text.encode("utf-8")  # a lone surrogate would fail here, in print() and in SQLite
    with sqlite3.connect(":memory:") as db:
        db.execute("CREATE TABLE t (error TEXT)")
        db.execute("INSERT INTO t VALUES (?)", (result.error,))
    db.close()
    assert_innocent_scores(task)


THREAD_BOMB = r'''
import os, threading
if os.getpid() == 2:  # only inside the sandbox's own PID namespace
    threading.stack_size(32768)
    _hold = threading.Event()
    for _ in range(2000):  # bounded: the cap is 256
        threading.Thread(target=_hold.wait, daemon=True).start()
'''


def test_a_thread_bomb_is_stopped(task: EplbTask) -> None:
    """Threads of the host's root user escape RLIMIT_NPROC and each takes a host pid: the worker's outer
    process counts them and ends the namespace past the cap."""
    result = task.evaluate(SEED_CODE + THREAD_BOMB)
    assert not result.correct
    assert result.error == "the program started more than 256 threads, the most the sandbox allows", result.error
    assert_innocent_scores(task)


NEAR_MEMO = r'''
_cache = []
_plan = rebalance_experts
def rebalance_experts(weight, *args):
    for seen, placement in _cache:
        if int((seen - weight).abs().sum()) <= weight.numel():  # close enough to reuse
            print("REUSED", flush=True)
            return placement
    placement = _plan(weight, *args)
    _cache.append((weight.clone(), placement))
    return placement
'''


def test_the_untimed_warm_up_cannot_answer_a_timed_call(task: EplbTask) -> None:
    """Work done in the untimed warm-up call must not serve any timed window."""
    result = task.evaluate(SEED_CODE + NEAR_MEMO)
    assert result.correct, result.error
    assert "REUSED" not in result.stdout


FULL_WIDTH = r'''
_narrow = rebalance_experts
def rebalance_experts(weight, num_replicas, *args):
    phy2log, log2phy, logcnt = _narrow(weight, num_replicas, *args)
    wide = torch.full((*log2phy.shape[:2], num_replicas), -1, dtype=torch.int64)  # as wide as the contract allows
    wide[:, :, : log2phy.shape[2]] = log2phy
    return phy2log, wide, logcnt
'''


# The worker's own cut undone from inside: full-width replies reach the harness, which must cut them itself.
UNCUT_REPLIES = r'''
import sys as _sys
_worker = _sys.modules["evaluator.sandbox.worker"]
_cut = _worker._materialise
def _uncut(out, *shape):
    arrays, problem = _cut(out, *shape)
    if arrays:
        arrays[1] = out[1].contiguous().numpy()
    return arrays, problem
_worker._materialise = _uncut
'''


def _held_bytes(arrays: tuple[np.ndarray, ...]) -> int:
    """The memory the harness keeps alive through these arrays: their own, or the buffers they view."""
    held: dict[int, int] = {}
    for array in arrays:
        base: object = array
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        held[id(base)] = base.nbytes if isinstance(base, (np.ndarray, memoryview)) else len(base)  # type: ignore[arg-type]
    return sum(held.values())


@pytest.mark.parametrize("uncut", [False, True], ids=["worker cuts", "harness cuts"])
def test_the_harness_keeps_only_what_a_placement_needs(task: EplbTask, uncut: bool) -> None:
    """A log2phy padded to num_replicas is legal, but the harness keeps it cut to the widest expert:
    L x E x R per window is 34 MB at the standard shape. The worker cuts it before sending; a reply that
    comes uncut anyway (the worker's code is the candidate's to change) is cut on arrival, into arrays of
    its own, so nothing holds the wide message."""
    program = SEED_CODE + FULL_WIDTH + (UNCUT_REPLIES if uncut else "")
    run = task.sandbox.run(program, task.plan_windows, task.args)
    assert run.ok, run.error
    for placement in run.placements:
        logcnt = placement[2]
        assert placement[1].shape[2] == logcnt.max() < task.options.num_replicas
        needed = sum(a.nbytes for a in placement)
        assert needed <= _held_bytes(placement) <= needed + wire.HEADER_BYTES
        if uncut:
            assert all(a.base is None for a in placement)
    assert task.evaluate(program).scores["native"] == task.evaluate(SEED_CODE).scores["native"]


UNCAPPED_MEMORY = r'''
import ctypes, socket
_libc = ctypes.CDLL(None, use_errno=True)
def _memfd():
    fd = os.memfd_create("sink")
    os.write(fd, bytes(1 << 20))  # write() allocates pages no mapping, so no RLIMIT_AS, accounts for
def _shm():
    if _libc.shmget(0, 1 << 20, 0o1000 | 0o600) < 0:
        raise OSError(ctypes.get_errno(), "refused")
def _pairs():
    held = [socket.socketpair() for _ in range(1000)]  # each pair can hold ~400 KB of kernel buffers
if os.getpid() == 2:  # only inside the sandbox's own PID namespace
    _try("MEMFD", _memfd)
    _try("SHM", _shm)
    _try("SOCKETS", _pairs)
'''


def test_memory_outside_the_address_space_cap_is_refused(task: EplbTask) -> None:
    """memfd pages written with write(), System V shared memory and socket buffers count against no
    RLIMIT_AS: 320 MB of the first two went into a worker allowed 64 MB before they were refused."""
    result = task.evaluate(hostile(UNCAPPED_MEMORY))
    assert result.correct, result.error
    found = tags(result)
    assert found["HOOKCHECK"] == "OK" and {found[t] for t in ("MEMFD", "SHM", "SOCKETS")} == {"FAIL"}, result.stdout
    assert_innocent_scores(task)


MOUNTS = r'''
import ctypes
_libc = ctypes.CDLL(None, use_errno=True)
def _call(fn, *args):
    if fn(*args) != 0:
        raise OSError(ctypes.get_errno(), "refused")
def _write(path):
    with open(path, "w") as fh:
        fh.write("raise RuntimeError('planted by an earlier candidate')\n")
print("TMPSEEN:" + repr(sorted(os.listdir("/tmp"))), flush=True)
_try("TMPFILE", lambda: _write("/tmp/statistics.py"))
_try("TMPDIR", lambda: os.mkdir("/tmp/planted"))
_try("TMPLINK", lambda: os.symlink("/scratch", "/tmp/link"))
_try("BENEATH", lambda: _write(os.path.join(os.path.dirname(BOUND), "statistics.py")))
_try("BOUND", lambda: _write(os.path.join(BOUND, "statistics.py")))
if os.getpid() == 2:  # only inside the sandbox's own PID namespace
    _try("REMOUNT", lambda: _call(_libc.mount, None, b"/tmp", None, 32 | 4096, None))  # rw again
    _try("COVER", lambda: _call(_libc.mount, b"tmpfs", b"/tmp", b"tmpfs", 0, b"size=1m"))
    _try("UNMOUNT", lambda: _call(_libc.umount2, b"/scratch", 2))  # the shared /scratch lies beneath
    _try("USERNS", lambda: _call(_libc.unshare, 0x10000000 | 0x00020000))  # caps back in a new userns
'''


def test_a_checkout_under_tmp_stays_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With something bound under /tmp (a checkout or venv there), /tmp and the directories bubblewrap made
    in it for the bind are frozen read-only, mounts cannot undo that, and the host's /tmp stays hidden."""
    bound = tmp_path / "checkout" / "evaluator-like"
    bound.mkdir(parents=True)
    assert str(bound).startswith("/tmp/"), "pytest's temporary directories are expected under /tmp"
    (tmp_path / "host-secret.txt").write_text("not for the sandbox")
    original = bwrap.read_only_binds()
    monkeypatch.setattr(bwrap, "read_only_binds", lambda: (*original, str(bound)))
    harness.shutdown()  # zygotes are shared: start one that has the extra bind
    try:
        task = small_task(tmp_path, timeout_s=4.0)
        result = task.evaluate(hostile(f"BOUND = {str(bound)!r}\n" + MOUNTS))
        assert result.correct, result.error
        found = tags(result)
        attempts = ("TMPFILE", "TMPDIR", "TMPLINK", "BENEATH", "BOUND", "REMOUNT", "COVER", "UNMOUNT", "USERNS")
        assert found["HOOKCHECK"] == "OK" and {found[t] for t in attempts} == {"FAIL"}, result.stdout
        seen = [line for line in result.stdout.splitlines() if line.startswith("TMPSEEN:")]
        # the first folder of every bind under /tmp (this one; the checkout's own, when it lives there), nothing else
        under_tmp = sorted({Path(b).parts[2] for b in (*original, str(bound)) if Path(b).parts[1:2] == ("tmp",)})
        assert seen == [f"TMPSEEN:{under_tmp!r}"], result.stdout
        assert "host-secret" not in result.stdout
        assert_innocent_scores(task)
    finally:
        harness.shutdown()
        assert not (bound / "statistics.py").exists() and not (tmp_path / "statistics.py").exists()


TERMINALS = r'''
def _pty(path):
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    globals().setdefault("_held", []).append(fd)  # kept open: a peer could read what is written to it
    return fd
_try("PTMX", lambda: _pty("/dev/ptmx"))
_try("PTSPTMX", lambda: _pty("/dev/pts/ptmx"))
_try("PTSLIST", lambda: sorted(os.listdir("/dev/pts")) or 1 / 0)
'''


def test_no_terminal_can_be_shared_with_another_candidate(task: EplbTask) -> None:
    """bubblewrap's /dev/pts is one instance for every worker of a zygote: a terminal one candidate opened
    there could be opened and read by another running at the same time. None can be opened."""
    result = task.evaluate(hostile(TERMINALS))
    assert result.correct, result.error
    found = tags(result)
    assert found["HOOKCHECK"] == "OK" and {found[t] for t in ("PTMX", "PTSPTMX", "PTSLIST")} == {"FAIL"}, result.stdout
    assert_innocent_scores(task)


FULL_WIDTH_JUNK = FULL_WIDTH.replace("    return phy2log, wide, logcnt",
                                     "    wide[-1, -1, -1] = 0  # one value where -1 belongs\n"
                                     "    return phy2log, wide, logcnt")


def test_a_full_width_reply_that_breaks_the_contract_is_refused_when_it_comes(task: EplbTask) -> None:
    """A log2phy as wide as num_replicas with one value past every count cannot be cut, and holding it whole
    for every window until the contract check is what the cut avoids: it is refused on arrival, in the
    contract check's own words."""
    run = task.sandbox.run(SEED_CODE + FULL_WIDTH_JUNK, task.plan_windows, task.args)
    assert not run.ok and not run.placements
    last = task.options.num_replicas - 1
    assert run.error == f"window 0: inconsistent maps: log2phy[3, 15, {last}] = 0 past logcnt must be -1", run.error
    assert task.evaluate(SEED_CODE + FULL_WIDTH_JUNK).error == run.error


LOCKS = r'''
import fcntl, struct
_f = open(os.__file__, "rb")  # read-only, and the same file every other candidate can open
_try("FLOCK", lambda: fcntl.flock(_f, fcntl.LOCK_SH | fcntl.LOCK_NB))
_try("LOCKF", lambda: fcntl.lockf(_f, fcntl.LOCK_SH | fcntl.LOCK_NB))
_try("GETLK", lambda: fcntl.fcntl(_f, fcntl.F_GETLK, struct.pack("hhqqi", 0, 0, 0, 0, 0)))
_try("OFDLK", lambda: fcntl.fcntl(_f, 37, struct.pack("hhqqi", 0, 0, 0, 0, 0)))  # F_OFD_SETLK
_try("GETFL", lambda: fcntl.fcntl(_f, fcntl.F_GETFL))
'''


def test_no_file_lock_can_signal_another_candidate(task: EplbTask) -> None:
    """A lock on a shared read-only file (the standard library) is seen by every process that opens it: two
    candidates running at once could talk through locks. The syscall filter refuses them; fcntl's other
    commands still work."""
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("F_OFD_SETLK's number above is x86_64's")
    result = task.evaluate(hostile(LOCKS))
    assert result.correct, result.error
    found = tags(result)
    assert found["HOOKCHECK"] == "OK" and found["GETFL"] == "OK", result.stdout
    assert {found[t] for t in ("FLOCK", "LOCKF", "GETLK", "OFDLK")} == {"FAIL"}, result.stdout
    assert_innocent_scores(task)


DISK = r'''
import ctypes
_libc = ctypes.CDLL(None, use_errno=True)
def _reserve(fd, mode):
    if _libc.fallocate(fd, mode, ctypes.c_long(1 << 33), ctypes.c_long(1 << 30)):
        raise OSError(ctypes.get_errno(), "refused")
_try("KEEPSIZE", lambda: _reserve(1, 1))  # FALLOC_FL_KEEP_SIZE: the file's size, which RLIMIT_FSIZE caps, stays
_try("GROW", lambda: _reserve(2, 0))
print("BLOCKS:" + str(os.fstat(1).st_blocks + os.fstat(2).st_blocks), flush=True)
'''


def test_stdout_cannot_reserve_the_hosts_disk(task: EplbTask) -> None:
    """stdout and stderr are unlinked files on the host's disk: fallocate with FALLOC_FL_KEEP_SIZE reserved
    1 GiB a call past the output cap (a loop could fill the disk under every other program's feet)."""
    result = task.evaluate(hostile(DISK))
    assert result.correct, result.error
    found = tags(result)
    assert found["HOOKCHECK"] == "OK" and found["KEEPSIZE"] == "FAIL" and found["GROW"] == "FAIL", result.stdout
    blocks = int(next(line for line in result.stdout.splitlines() if line.startswith("BLOCKS:"))[7:])
    assert blocks * 512 < 1 << 20, blocks
    assert_innocent_scores(task)


KERNEL_BUFFERS = r'''
import fcntl, socket
def _pair():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 26)  # up to net.core.wmem_max, 4 MB on some hosts
    return a, b
_try("SOCKETPAIR", _pair)
_try("SOCKET", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
_r, _w = os.pipe()
_try("PIPE", lambda: os.write(_w, b"x"))
_try("PIPESIZE", lambda: fcntl.fcntl(_w, 1031, 1 << 20))  # F_SETPIPE_SZ: a 1 MB pipe
'''


def test_no_kernel_buffer_can_grow_past_a_few_pages(task: EplbTask) -> None:
    """Socket and pipe buffers are memory no address-space cap counts: with net.core.wmem_max at 4 MB, 100
    socket pairs queued 1.6 GB of it in one worker. Sockets cannot be made (the worker has its own to the
    harness) and pipes keep their default size."""
    result = task.evaluate(hostile(KERNEL_BUFFERS))
    assert result.correct, result.error
    found = tags(result)
    assert found["HOOKCHECK"] == "OK" and found["PIPE"] == "OK", result.stdout
    assert {found[t] for t in ("SOCKETPAIR", "SOCKET", "PIPESIZE")} == {"FAIL"}, result.stdout
    assert_innocent_scores(task)
