"""The message format between the harness and a sandbox worker.

A message is a JSON header (with each array's dtype and shape) followed by the arrays' raw bytes. Only
plain numeric dtypes are accepted and nothing is unpickled, so a hostile candidate that takes over its worker still cannot make
the harness run code by sending a crafted pickle.
"""
from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class WireError(ValueError):
    """A message that does not follow the format."""


_ALLOWED_KINDS = set("biuf")  # bool, signed, unsigned, float: never objects


def encode(header: dict[str, Any], arrays: list[np.ndarray] | tuple = ()) -> bytes:
    arrays = [np.ascontiguousarray(a) for a in arrays]
    meta = [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]
    head = json.dumps({"header": header, "arrays": meta}).encode()
    return b"".join([struct.pack("<I", len(head)), head, *(a.tobytes() for a in arrays)])


def decode(message: bytes) -> tuple[dict[str, Any], list[np.ndarray]]:
    try:
        (head_len,) = struct.unpack_from("<I", message, 0)
        envelope = json.loads(message[4 : 4 + head_len].decode())
        header, meta = envelope["header"], envelope["arrays"]
        if not isinstance(header, dict) or not isinstance(meta, list):
            raise WireError("header is not an object")
        pos = 4 + head_len
        arrays = []
        for item in meta:
            dtype = np.dtype(str(item["dtype"]))
            if dtype.kind not in _ALLOWED_KINDS:
                raise WireError(f"array of kind {dtype.kind!r} refused")
            shape = tuple(int(n) for n in item["shape"])
            size = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
            if size < 0 or pos + size > len(message):
                raise WireError("array length runs past the message")
            count = size // dtype.itemsize if dtype.itemsize else 0
            arrays.append(np.frombuffer(message, dtype=dtype, count=count, offset=pos).reshape(shape))
            pos += size
    except WireError:
        raise
    except Exception as exc:
        raise WireError(f"unreadable message ({type(exc).__name__}: {exc})") from None
    return header, arrays
