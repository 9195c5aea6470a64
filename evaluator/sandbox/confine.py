"""Kernel calls that wall one worker off from the zygote and from every other worker.

Called inside the bubblewrap sandbox, before any candidate code exists. The worker's outer process
calls `enter_namespaces()` (new user, PID, mount, network and IPC namespaces), then forks the init of
the new PID namespace, which calls `seal()`: `/proc` and `/dev/pts` are covered by empty read-only tmpfs,
`/scratch` and `/dev/shm` by small tmpfs of the worker's own (the ones bubblewrap made are shared by every worker of
the zygote: a file left there would reach the next candidate), the rest of the root is made read-only,
no new privileges can be gained, and every capability of the new user namespace is dropped. The init then
forks the candidate's process, which cannot name, signal, pidfd or ptrace the zygote, the standby
worker or any sibling, cannot undo the seal, and whose every child dies with the namespace.
"""
from __future__ import annotations

import ctypes
import os
import signal

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_RELATIME = 32, 1024, 2048, 4096, 1 << 21
SCRATCH = ("/scratch", "/dev/shm")  # writable, private to one worker, gone with it ($TMPDIR and $HOME)
SCRATCH_SIZE = "64m"  # tmpfs pages escape RLIMIT_AS: keep them small
_CAPABILITY_VERSION_3 = 0x20080522
_LAST_CAPABILITY = 63

_libc = ctypes.CDLL(None, use_errno=True)


class ConfineError(OSError):
    """A namespace or privilege call the kernel refused: the worker cannot be isolated."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise ConfineError(errno, f"{what}: {os.strerror(errno)}")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option})")


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies, so nothing outlives the process that started it."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def undumpable() -> None:
    """No process of the same user may ptrace this one or open its /proc memory files."""
    prctl(PR_SET_DUMPABLE, 0)


def enter_namespaces() -> None:
    """New user, PID, mount, network and IPC namespaces; the next fork is PID 1 of the new PID namespace."""
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC), "unshare")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _read_only(path: str) -> None:
    """Remount one mount read-only, keeping the flags the kernel locks (nosuid, nodev, noexec, atime)."""
    have = os.statvfs(path).f_flag
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | (have & (MS_NOSUID | MS_NODEV | MS_NOEXEC))
    flags |= ((MS_NOATIME if have & 1024 else 0) | (MS_NODIRATIME if have & 2048 else 0)
              | (MS_RELATIME if have & 4096 else 0))
    _check(_libc.mount(None, path.encode(), None, flags, None), f"making {path} read-only")


def _private_scratch() -> None:
    """Fresh, size-capped /scratch and /dev/shm for this worker; /, /dev and /tmp read-only (shared with
    siblings). /tmp is not replaced but frozen: the Python installation or checkout may be bound beneath it."""
    for path in SCRATCH:
        options = f"size={SCRATCH_SIZE},mode=1777".encode()
        _check(_libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options), f"mounting {path}")
    for path in ("/", "/dev", "/tmp"):
        _read_only(path)
    os.chdir("/scratch")  # the old working directory is the shared one underneath


def _cover(path: str) -> None:
    """Hide what lies under `path` beneath an empty, read-only tmpfs."""
    _check(_libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=4k"),
           f"hiding {path}")


def seal() -> None:
    """Hide /proc and /dev/pts, give the worker private scratch space, forbid new privileges, drop every
    capability.

    /dev/pts is bubblewrap's one pseudo-terminal instance, shared by every worker of the zygote: a terminal
    one candidate opens there (through /dev/ptmx) another running at the same time could open and read, a
    channel between programs. No balancer needs a terminal, so none is left to open."""
    _cover("/proc")
    _cover("/dev/pts")
    _private_scratch()
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    for cap in range(_LAST_CAPABILITY + 1):
        dropped = _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) == 0
        if not dropped and ctypes.get_errno() != 22:  # EINVAL: no such cap
            _check(-1, "dropping capabilities")
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "dropping capabilities")


# --- a syscall filter: no new processes --------------------------------------------------------------
# Processes in the sandbox belong to the host's root when the harness runs as root, which RLIMIT_NPROC
# does not count, and every process of a PID namespace still takes one of the host's pids (32768 on
# many machines): a fork bomb would starve every user of the machine until the evaluation's timeout.
# The candidate's process therefore may not create processes at all (the audit hook forbids it too);
# threads stay allowed. Memory outside any mapping (a memfd written with write(), System V shared memory
# detached after use) escapes RLIMIT_AS: 320 MB of each went into a worker allowed 64 MB, so those are
# refused too, as are a few syscalls no balancer needs whose kernel code is a frequent source of exploits.
# A classic BPF program, built here because no maintained libseccomp binding installs into a virtual
# environment.

_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_EPERM, _ENOSYS = 1, 38
_CLONE_THREAD = 0x00010000
_X32_SYSCALL_BIT = 0x40000000
_IO_URING = [425, 426, 427]  # setup, enter, register: the same numbers on every architecture below
# audit arch -> (clone, clone3, [refused syscalls]): fork, vfork; memory that no address-space cap counts
# (memfd_create, System V shmget, semget, msgget; i386's ipc multiplexer); per-user quotas shared with
# every process of the host's user (inotify_init, inotify_init1, fanotify_init, mq_open: 128 inotify
# instances held by a candidate would leave none to the machine's other root processes); then kernel
# surface no balancer needs (add_key, request_key, keyctl, userfaultfd, perf_event_open, bpf, io_uring)
# (flock, and fcntl's lock commands below: a lock taken on a shared read-only file is seen by every other
# process, so two candidates running at once could signal each other through it; fallocate: with
# FALLOC_FL_KEEP_SIZE it reserves disk blocks past RLIMIT_FSIZE, and stdout and stderr are files on the
# host's disk, which a candidate could fill during its evaluation; socket, socketpair and i386's socketcall:
# a socket's buffers are kernel memory no address-space cap counts, up to net.core.wmem_max a socket, 1.6 GB
# queued in 100 pairs where that is 4 MB; fcntl's F_SETPIPE_SZ likewise grows a pipe to 1 MB; setpgid and
# setsid: a finished worker is stopped by a signal to its process group until it is killed, and a candidate
# that left the group ran on beside the reference's timed calls and the next candidate's, past the thread cap)
_ARCHES = {
    0xC000003E: (56, 435, [57, 58, 319, 29, 64, 68, 253, 294, 300, 240, 248, 249, 250, 323, 298, 321, *_IO_URING,
                           73, 285, 41, 53, 109, 112], [72]),
    0x40000003: (120, 435,
                 [2, 190, 356, 117, 393, 395, 399, 291, 332, 338, 277, 286, 287, 288, 374, 336, 357, *_IO_URING,
                  143, 324, 102, 359, 360, 57, 66], [55, 221]),
    0xC00000B7: (220, 435, [279, 186, 190, 194, 26, 262, 180, 217, 218, 219, 282, 241, 280, *_IO_URING, 32, 47,
                            198, 199, 154, 157], [25]),
}  # x86_64, i386 (int 0x80 from an x86_64 process), aarch64: clone, clone3, refused calls, fcntl (and fcntl64)
# fcntl commands refused: F_GETLK, F_SETLK, F_SETLKW, their 64-bit forms on i386, the open-file-description
# ones, and F_SETPIPE_SZ
_REFUSED_FCNTL = [5, 6, 7, 12, 13, 14, 36, 37, 38, 1031]
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _no_processes_program() -> list[tuple[int, int, int, int]]:
    """seccomp_data: nr at 0, arch at 4, args[0] (its low half on little-endian) at 16."""
    deny, nosys = (_RET_K, 0, 0, _RET_ERRNO | _EPERM), (_RET_K, 0, 0, _RET_ERRNO | _ENOSYS)
    allow = (_RET_K, 0, 0, _RET_ALLOW)
    prog: list[tuple[int, int, int, int]] = []
    for arch, (clone, clone3, forks, fcntls) in _ARCHES.items():
        body = [(_LD_W_ABS, 0, 0, 0), (_JGE_K, 0, 1, _X32_SYSCALL_BIT), deny]
        for nr in forks:
            body += [(_JEQ_K, 0, 1, nr), deny]
        # fcntl: load its command (args[1], low half at 24) and refuse the ones listed, allow the rest
        count = len(_REFUSED_FCNTL)
        locks = [(_LD_W_ABS, 0, 0, 24)]
        locks += [(_JEQ_K, count - i, 0, cmd) for i, cmd in enumerate(_REFUSED_FCNTL)]  # to `deny` below
        locks += [allow, deny]
        for nr in fcntls:
            body += [(_JEQ_K, 0, len(locks), nr), *locks]
        body += [(_JEQ_K, 0, 1, clone3), nosys]  # glibc then falls back to clone() for threads
        body += [(_JEQ_K, 0, 4, clone), (_LD_W_ABS, 0, 0, 16), (_JSET_K, 0, 1, _CLONE_THREAD), allow, deny, allow]
        prog += [(_LD_W_ABS, 0, 0, 4), (_JEQ_K, 0, len(body), arch), *body]
    return prog + [allow]  # an architecture not listed: the namespaces alone


def forbid_new_processes() -> None:
    """Install the filter in this process (no_new_privs must be set): fork, vfork, clone without
    CLONE_THREAD, the syscalls listed in `_ARCHES` and the fcntl commands in `_REFUSED_FCNTL` fail with
    EPERM from now on, in this process and its threads."""
    program = _no_processes_program()
    filters = (_SockFilter * len(program))(*[_SockFilter(*ins) for ins in program])
    fprog = _SockFprog(len(program), filters)
    _check(_libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
           "installing the syscall filter")
