"""Kernel calls that wall one worker off from the zygote and from every other worker.

Called inside the bubblewrap sandbox, before any candidate code exists. The worker's outer process
calls `enter_namespaces()` (new user, PID, mount, network and IPC namespaces), then forks the init of
the new PID namespace, which calls `seal()`: `/proc` is covered by an empty read-only tmpfs, no new
privileges can be gained, and every capability of the new user namespace is dropped. The init then
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


def seal() -> None:
    """Hide /proc, forbid new privileges, drop every capability (bounding set included)."""
    _check(_libc.mount(b"tmpfs", b"/proc", b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=4k"), "hiding /proc")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    for cap in range(_LAST_CAPABILITY + 1):
        if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL: no such cap
            _check(-1, "dropping capabilities")
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "dropping capabilities")
