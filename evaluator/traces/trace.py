"""The `Trace` type, its windows, and the `.npz` storage format.

A trace is integer token counts `[steps, layers, experts]` plus metadata. Its content checksum covers
the counts and the shape, so a dataset name can promise the same numbers on every machine.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evolve.errors import UserError


class TraceError(UserError):
    """A trace file or array that cannot be used; the message is one line naming file and problem."""


@dataclass
class Trace:
    """Per-step expert load of one model: `counts[step, layer, expert]` tokens routed."""

    counts: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts)
        if counts.ndim != 3:
            raise TraceError(f"trace counts must be [steps, layers, experts], got shape {counts.shape}")
        if counts.size and not np.issubdtype(counts.dtype, np.integer):
            if not np.all(np.isfinite(counts)) or not np.all(counts == np.round(counts)):
                raise TraceError("trace counts must be whole numbers")
            counts = counts.astype(np.int64)
        if counts.size and counts.min() < 0:
            bad = np.argwhere(counts < 0)[0]
            raise TraceError(f"trace counts must be non-negative: step {bad[0]}, layer {bad[1]}, expert {bad[2]}")
        self.counts = counts.astype(np.int64, copy=False)

    @property
    def steps(self) -> int:
        return int(self.counts.shape[0])

    @property
    def num_layers(self) -> int:
        return int(self.counts.shape[1])

    @property
    def num_experts(self) -> int:
        return int(self.counts.shape[2])

    @property
    def sha256(self) -> str:
        """Content checksum, computed once: the counts of a trace are never changed in place."""
        cached = self.__dict__.get("_sha256")
        if cached is None:
            cached = self.__dict__["_sha256"] = content_sha256(self.counts)
        return cached

    def windows(self, steps: int = 100, partial: bool = False) -> torch.Tensor:
        return windows(self, steps, partial)

    def slice_steps(self, start: int, stop: int | None = None) -> "Trace":
        meta = dict(self.meta, parent_sha256=self.sha256, step_range=[start, stop if stop is not None else self.steps])
        return Trace(self.counts[start:stop].copy(), meta)


def content_sha256(counts: np.ndarray) -> str:
    """Checksum of the counts independent of dtype width and memory layout."""
    arr = np.ascontiguousarray(counts, dtype="<i8")
    h = hashlib.sha256()
    h.update(json.dumps(list(arr.shape)).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def windows(trace: Trace, steps: int = 100, partial: bool = False) -> torch.Tensor:
    """Sum consecutive steps into windows: `[num_windows, layers, experts]` float64.

    A trailing window shorter than `steps` is kept when `partial` (as the published ADRS / OpenEvolve
    loader does: it sums whatever steps remain), else dropped so every window carries the same traffic.
    """
    if steps <= 0:
        raise TraceError(f"window size must be a positive number of steps, got {steps}")
    n = trace.steps // steps
    rest = trace.steps - n * steps if partial else 0
    if n == 0 and not rest:
        raise TraceError(f"trace has {trace.steps} steps, fewer than one window of {steps}")
    counts = trace.counts[: n * steps].reshape(n, steps, trace.num_layers, trace.num_experts)
    sums = counts.sum(axis=1)
    if rest:
        sums = np.concatenate([sums, trace.counts[n * steps:].sum(axis=0, keepdims=True)])
    return torch.from_numpy(sums.astype(np.float64))


def save_npz(trace: Trace, path: str | Path) -> Path:
    """Write a compressed `.npz` holding `counts` and JSON metadata (never pickle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(trace.meta, sha256=trace.sha256)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, counts=trace.counts, meta=np.array(json.dumps(meta, sort_keys=True)))
    tmp.replace(path)
    return path


def read_npz_meta(path: str | Path) -> dict[str, Any]:
    """Only the JSON metadata of a `.npz` trace (the counts are not read); {} when it has none or is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
    except Exception:  # listing datasets must not fail on one bad file; loading it names the problem
        return {}
    return meta if isinstance(meta, dict) else {}


def load_npz(path: str | Path) -> Trace:
    """Read a trace written by `save_npz` (or any `.npz` with a `counts` array)."""
    path = Path(path)
    if not path.exists():
        raise TraceError(f"{path}: no such trace file; give a dataset name (see `eplb-evolve traces list`) or a path")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "counts" not in data.files:
                raise TraceError(f"{path}: .npz has no 'counts' array (has: {', '.join(data.files) or 'nothing'})")
            counts = data["counts"]
            meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
    except TraceError:
        raise
    except Exception as exc:  # zip errors, truncated files, pickled objects
        raise TraceError(f"{path}: not a readable .npz trace ({type(exc).__name__}: {exc})") from None
    try:
        trace = Trace(counts, meta)
    except TraceError as exc:
        raise TraceError(f"{path}: {exc}") from None
    expected = meta.get("sha256")
    if expected and expected != trace.sha256:
        raise TraceError(f"{path}: content checksum {trace.sha256[:12]} does not match the recorded {expected[:12]}; "
                         "the file is corrupt, regenerate or re-import it")
    trace.meta.setdefault("source", str(path))
    return trace
