"""The message format between the harness and a sandbox worker.

A message is a JSON header plus zero or more arrays in `.npy` form. The harness decodes what a worker
sends with `allow_pickle=False`, so a hostile candidate that takes over its worker still cannot make
the harness run code by sending a crafted pickle.
"""
from __future__ import annotations

import io
import json
import struct
from typing import Any

import numpy as np

MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class WireError(ValueError):
    """A message that does not follow the format."""


def encode(header: dict[str, Any], arrays: list[np.ndarray] | tuple = ()) -> bytes:
    head = json.dumps(header).encode()
    parts = [struct.pack("<II", len(head), len(arrays)), head]
    for arr in arrays:
        buf = io.BytesIO()
        np.save(buf, np.asarray(arr), allow_pickle=False)
        data = buf.getvalue()
        parts.append(struct.pack("<Q", len(data)))
        parts.append(data)
    return b"".join(parts)


def decode(message: bytes) -> tuple[dict[str, Any], list[np.ndarray]]:
    try:
        head_len, count = struct.unpack_from("<II", message, 0)
        pos = 8
        header = json.loads(message[pos : pos + head_len].decode())
        pos += head_len
        if not isinstance(header, dict):
            raise WireError("header is not an object")
        arrays = []
        for _ in range(count):
            (size,) = struct.unpack_from("<Q", message, pos)
            pos += 8
            if size > len(message) - pos:
                raise WireError("array length runs past the message")
            arrays.append(np.load(io.BytesIO(message[pos : pos + size]), allow_pickle=False))
            pos += size
    except WireError:
        raise
    except Exception as exc:
        raise WireError(f"unreadable message ({type(exc).__name__}: {exc})") from None
    return header, arrays
