"""Framed messages on a worker's socket, read and written by the harness under a deadline.

The framing is `multiprocessing.connection`'s (a 4-byte big-endian length, then the bytes), which the
worker keeps using. The harness does not use `Connection.recv_bytes` for replies: after `poll()` says
a byte is there it blocks until the whole message has come, so a worker that sends a length and then
nothing (or one byte a minute) would hold the harness past every timeout. Here the socket is
non-blocking and every read and write waits at most until the evaluation's deadline.
"""
from __future__ import annotations

import os
import select
import struct
import time

_LENGTH = struct.Struct("!i")
_IOV_MAX = 64  # buffers per writev: a message has four or five


class MessageTooLarge(OSError):
    """A reply announced more bytes than the harness accepts; nothing was allocated for it."""


def _wait(fd: int, event: int, deadline: float) -> None:
    poller = select.poll()
    poller.register(fd, event | select.POLLERR | select.POLLHUP)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        if poller.poll(remaining * 1000):
            return


def _read_exact(fd: int, size: int, deadline: float) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        try:
            count = os.readv(fd, [view[got:]])
        except BlockingIOError:
            _wait(fd, select.POLLIN, deadline)
            continue
        if count == 0:
            raise EOFError
        got += count
    return buffer


def receive(fd: int, limit: int, deadline: float) -> bytearray:
    """One whole message of at most `limit` bytes, or TimeoutError at the deadline (fd is non-blocking).
    A bytearray, not bytes: a placement may be tens of MB, and arrays are read from it without a copy."""
    (size,) = _LENGTH.unpack(_read_exact(fd, _LENGTH.size, deadline))
    if size < 0 or size > limit:
        raise MessageTooLarge(f"a message of {size} bytes announced, at most {limit} accepted")
    return _read_exact(fd, size, deadline)


def frame(payload: bytes) -> bytes:
    """A message with its length in front: what `send_framed` writes (framed once, sent many times)."""
    return _LENGTH.pack(len(payload)) + payload


def send(fd: int, payload: bytes, deadline: float) -> None:
    """Write one message, or TimeoutError at the deadline (a worker that stops reading cannot block us)."""
    send_framed(fd, frame(payload), deadline)


def send_framed(fd: int, framed: bytes, deadline: float, patch: tuple[int, bytes] | None = None) -> None:
    """Write a message `frame` made, or TimeoutError at the deadline. `patch` (offset, bytes) replaces those
    bytes of the message on the way out, without copying it (a window's token, see `harness`)."""
    view = memoryview(framed)
    parts = [view] if patch is None else [view[: patch[0]], memoryview(patch[1]), view[patch[0] + len(patch[1]) :]]
    while parts:
        try:
            written = os.writev(fd, parts)
        except BlockingIOError:
            _wait(fd, select.POLLOUT, deadline)
            continue
        while parts and written >= len(parts[0]):
            written -= len(parts[0])
            parts.pop(0)
        if parts and written:
            parts[0] = parts[0][written:]


def write_parts(fd: int, parts: list[bytes | memoryview]) -> None:
    """Write one message given as buffers (see `wire.encode_parts`) on a blocking descriptor, without
    joining them: the worker's side, which waits as long as the harness lets it."""
    views = [memoryview(_LENGTH.pack(sum(len(p) for p in parts)))] + [memoryview(p) for p in parts]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
