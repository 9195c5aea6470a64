"""The message format between the harness and a sandbox worker.

A message is a 4-byte header length, a JSON header (with each array's dtype and shape) and the arrays'
raw bytes. Nothing is unpickled, so a candidate that takes over its worker cannot make the harness run
code. Replies are decoded against a `Layout` the harness expects: the byte count is checked before any
allocation (`max_bytes`), then the dtypes, the shapes, the JSON (no NaN or Infinity), and that nothing
trails the last array. Every problem is one `WireError` line that rejects the program that sent it.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

HEADER_BYTES = 64 * 1024  # the JSON part of any message: ample for an error line and three shapes
INT64 = np.dtype("<i8")
ALIGN = 8  # arrays decoded in place are read at full speed only when aligned to their item size


class WireError(ValueError):
    """A message that does not follow the format."""


@dataclass(frozen=True)
class Layout:
    """The arrays one reply may carry: int64 placements of `layers` x `experts` with `replicas` slots."""

    layers: int
    experts: int
    replicas: int

    @property
    def max_bytes(self) -> int:
        """The largest well-formed reply: the three arrays at their widest plus the header."""
        cells = self.layers * self.replicas + self.layers * self.experts * self.replicas + self.layers * self.experts
        return 4 + HEADER_BYTES + INT64.itemsize * cells

    def check(self, shapes: list[tuple[int, ...]]) -> None:
        """Refuse anything but [L, R], [L, E, X] with 1 <= X <= R, and [L, E]."""
        L, E, R = self.layers, self.experts, self.replicas
        if len(shapes) != 3:
            raise WireError(f"a placement has 3 arrays, the reply carried {len(shapes)}")
        phy2log, log2phy, logcnt = shapes
        if (phy2log != (L, R) or logcnt != (L, E) or len(log2phy) != 3 or log2phy[:2] != (L, E)
                or not 1 <= log2phy[2] <= R):
            raise WireError(f"placement shapes {[list(s) for s in shapes]} are not [{L}, {R}], [{L}, {E}, 1..{R}], "
                            f"[{L}, {E}]")


def encode_parts(header: dict[str, Any], arrays: list[np.ndarray] | tuple = ()) -> list[bytes | memoryview]:
    """One message as the buffers to write in order: the arrays' own memory, not copies of it (a
    placement is megabytes, and the worker writes it inside the timed call)."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    meta = [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]
    head = json.dumps({"header": header, "arrays": meta}, allow_nan=False).encode()
    head += b" " * (-(4 + len(head)) % ALIGN)  # JSON may end in blanks: the arrays start 8-byte aligned
    return [struct.pack("<I", len(head)) + head, *(memoryview(a.reshape(-1)).cast("B") for a in arrays if a.size)]


def encode(header: dict[str, Any], arrays: list[np.ndarray] | tuple = ()) -> bytes:
    return b"".join(encode_parts(header, arrays))


def _no_constants(name: str) -> Any:
    raise WireError(f"the header holds {name}, which is not a number the harness accepts")


def _count(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise WireError(f"{what} must be a non-negative integer, got {value!r}"[:200])
    return value


def _parse_header(message: bytes | bytearray) -> tuple[dict[str, Any], list[Any], int]:
    if len(message) < 4:
        raise WireError("the message is shorter than its length prefix")
    (head_len,) = struct.unpack_from("<I", message, 0)
    if head_len > HEADER_BYTES or 4 + head_len > len(message):
        raise WireError(f"a header of {head_len} bytes is refused (at most {HEADER_BYTES}, within the message)")
    try:
        envelope = json.loads(message[4 : 4 + head_len].decode(), parse_constant=_no_constants)
    except WireError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"the header is not JSON ({type(exc).__name__})") from None
    if (not isinstance(envelope, dict) or not isinstance(envelope.get("header"), dict)
            or not isinstance(envelope.get("arrays"), list)):
        raise WireError("the header is not an object with 'header' and 'arrays'")
    return envelope["header"], envelope["arrays"], 4 + head_len


def decode(message: bytes | bytearray, layout: Layout | None = None) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Header and arrays of one message. With a `layout` (the harness reading a worker), arrays must be
    little-endian int64 placements of exactly that layout; without one (a worker reading the harness,
    which it trusts) plain numeric arrays of any shape are read."""
    header, meta, pos = _parse_header(message)
    shapes: list[tuple[int, ...]] = []
    dtypes: list[np.dtype] = []
    for item in meta:
        if not isinstance(item, dict) or not isinstance(item.get("shape"), list):
            raise WireError("an array description is not an object with a shape")
        shapes.append(tuple(_count(n, "an array dimension") for n in item["shape"]))
        if layout is not None:
            if item.get("dtype") != INT64.str:
                raise WireError(f"arrays must be {INT64.str} (int64), the reply carried "
                                f"{str(item.get('dtype'))[:20]!r}")
            dtypes.append(INT64)
        else:
            try:
                dtype = np.dtype(str(item.get("dtype")))
            except TypeError:
                raise WireError("an array has an unknown dtype") from None
            if dtype.kind not in "biuf":
                raise WireError(f"array of kind {dtype.kind!r} refused")
            dtypes.append(dtype)
    if layout is not None and (meta or header.get("type") == "placement"):
        layout.check(shapes)
    arrays = []
    for shape, dtype in zip(shapes, dtypes):
        size = dtype.itemsize * math.prod(shape)
        if pos + size > len(message):
            raise WireError("an array runs past the end of the message")
        count = math.prod(shape)
        array = np.frombuffer(message, dtype=dtype, count=count, offset=pos) if count else np.empty(0, dtype)
        arrays.append(array.reshape(shape))
        pos += size
    if pos != len(message):
        raise WireError(f"{len(message) - pos} bytes trail the last array")
    return header, arrays
