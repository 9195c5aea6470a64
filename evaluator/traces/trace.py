"""The `Trace` type, its windows, and the `.npz` storage format.

A trace is integer token counts `[steps, layers, experts]` plus metadata. Its content checksum covers
the counts and the shape, so a dataset name can promise the same numbers on every machine.

A trace may also carry route samples: the experts of a few real tokens per step in every layer
(`routes [S, L, K]`, the step of each in `route_steps [S]`). Counts say how much load each expert gets;
only routes say which experts the same token visits, which is what cross-node traffic and cross-layer
correlation depend on. Their own checksum (`routes_sha256`) is kept apart from the counts' one, so
adding route samples to a generator never changes a pinned dataset checksum.
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
    routes: np.ndarray | None = None  # [S, L, K] int16 expert ids of S sampled tokens (best first when known)
    route_steps: np.ndarray | None = None  # [S] int64 step of each sampled token, non-decreasing

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts)
        if counts.ndim != 3:
            raise TraceError(f"trace counts must be [steps, layers, experts], got shape {counts.shape}")
        if counts.shape[1] < 1 or counts.shape[2] < 1:
            raise TraceError(f"trace counts must have at least one layer and one expert, got shape {counts.shape}")
        if counts.dtype.kind not in "iuf":  # booleans, complex numbers, text, records: not token counts
            raise TraceError(f"trace counts must be whole numbers, found {counts.dtype} values")
        if counts.size and counts.dtype.kind == "f":
            if not np.all(np.isfinite(counts)) or not np.all(counts == np.round(counts)):
                raise TraceError("trace counts must be whole numbers")
            if counts.max() >= 2.0**63:
                raise TraceError(f"trace counts must stay below 2**53, found {counts.max():.4g}")
            counts = counts.astype(np.int64)
        if counts.size and counts.min() < 0:
            bad = np.argwhere(counts < 0)[0]
            raise TraceError(f"trace counts must be non-negative: step {bad[0]}, layer {bad[1]}, expert {bad[2]}")
        if counts.size and int(counts.max()) * counts.shape[0] > MAX_TOTAL:
            # windows sum steps in int64 and score in float64: past this, sums wrap or round silently
            raise TraceError(f"trace counts up to {int(counts.max())} over {counts.shape[0]} steps could sum past "
                             f"2**53 (the largest whole number a window's float64 load holds exactly)")
        self.counts = counts.astype(np.int64, copy=False)
        self.routes, self.route_steps = check_routes(self.routes, self.route_steps, self.counts.shape)

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

    @property
    def routes_sha256(self) -> str | None:
        """Checksum of the route samples (None without them); separate from `sha256`, which covers counts."""
        if self.routes is None or self.route_steps is None:
            return None
        return routes_sha256(self.routes, self.route_steps)

    def windows(self, steps: int = 100, partial: bool = False) -> torch.Tensor:
        return windows(self, steps, partial)

    def slice_steps(self, start: int, stop: int | None = None) -> "Trace":
        """Steps [start, stop) as a new trace; route samples of those steps come along, their steps re-based."""
        lo, hi, _ = slice(start, stop).indices(self.steps)
        hi = max(hi, lo)
        meta = dict(self.meta, parent_sha256=self.sha256, step_range=[start, stop if stop is not None else self.steps])
        for key in PER_STEP_META:  # per-step lists in the metadata follow the steps
            if isinstance(meta.get(key), list):
                meta[key] = meta[key][lo:hi]
        meta.pop("routes_sha256", None)
        routes = route_steps = None
        if self.routes is not None and self.route_steps is not None:
            keep = (self.route_steps >= lo) & (self.route_steps < hi)
            routes, route_steps = self.routes[keep].copy(), self.route_steps[keep] - lo
        return Trace(self.counts[start:stop].copy(), meta, routes, route_steps)


# Metadata entries that hold one value per step (the generator's record of its serving traffic).
PER_STEP_META = ("step_prefill", "step_top_request_share")
MAX_TOTAL = 2**53  # counts of one expert summed over every step stay exact in float64 (and far from int64's end)
# The metadata keys the evaluator reads, with the JSON types a file may give them (None: may be null).
META_TYPES: dict[str, tuple[type, ...]] = {
    **{key: (str,) for key in ("sha256", "routes_sha256", "name", "split", "source", "format", "origin", "preset",
                               "groups_from", "description")},
    **{key: (int, type(None)) for key in ("num_groups", "top_k", "steps")},
    "model": (dict, type(None)),
    **{key: (list,) for key in PER_STEP_META},
}
MODEL_TYPES: dict[str, tuple[type, ...]] = {"name": (str,), "num_groups": (int, type(None)),
                                            "top_k": (int, type(None)), "layers": (int,), "experts": (int,)}
MAX_META_INT = 2**31


def check_routes(routes: Any, steps: Any, shape: tuple[int, ...]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Validated `(routes int16 [S, L, K], route_steps int64 [S])`, or TraceError in one line.

    Both or neither: one without the other is an error. Ids lie in [0, experts) and are distinct within a
    token's layer row; steps lie in [0, steps) and never decrease.
    """
    if routes is None and steps is None:
        return None, None
    if routes is None or steps is None:
        raise TraceError("route samples need both 'routes' and 'route_steps' (got only one)")
    n_steps, layers, experts = shape
    r, s = np.asarray(routes), np.asarray(steps)
    if r.ndim != 3 or r.shape[1] != layers or r.shape[2] < 1:
        raise TraceError(f"routes must be [samples, {layers} layers, k experts], got shape {r.shape}")
    if s.shape != (r.shape[0],):
        raise TraceError(f"route_steps must have one step per sampled token ({r.shape[0]}), got shape {s.shape}")
    for name, arr in (("routes", r), ("route_steps", s)):
        if arr.size and arr.dtype.kind not in "iu":
            raise TraceError(f"{name} must be whole numbers, found {arr.dtype.name} values")
    if r.shape[2] > experts:
        raise TraceError(f"routes name {r.shape[2]} experts per token but the trace has only {experts} experts")
    if r.size and experts > np.iinfo(np.int16).max + 1:
        raise TraceError(f"route samples are stored as int16 expert ids, so a trace with routes has at most "
                         f"{np.iinfo(np.int16).max + 1} experts, not {experts}")
    if r.size:
        bad = np.argwhere((r < 0) | (r >= experts))
        if bad.size:
            i, layer, j = (int(x) for x in bad[0])
            raise TraceError(f"routes: expert id {int(r[i, layer, j])} of sampled token {i}, layer {layer} is outside "
                             f"[0, {experts})")
        ordered = np.sort(r, axis=-1)
        dup = np.argwhere(ordered[..., 1:] == ordered[..., :-1])
        if dup.size:
            i, layer, _ = (int(x) for x in dup[0])
            expert = int(ordered[i, layer, dup[0][2]])
            raise TraceError(f"routes: sampled token {i}, layer {layer} names expert {expert} twice; a token's "
                             "experts in a layer are distinct")
    if s.size:
        if s.min() < 0 or s.max() >= n_steps:
            i = int(np.argmax((s < 0) | (s >= n_steps)))
            raise TraceError(f"route_steps: sampled token {i} has step {int(s[i])}, outside [0, {n_steps})")
        if (np.diff(s) < 0).any():
            i = int(np.argmax(np.diff(s) < 0)) + 1
            raise TraceError(f"route_steps must not decrease: sampled token {i} has step {int(s[i])} after "
                             f"{int(s[i - 1])}")
    return r.astype(np.int16, copy=False), s.astype(np.int64, copy=False)


def routes_sha256(routes: np.ndarray, steps: np.ndarray) -> str:
    """Checksum of route samples independent of dtype width and memory layout."""
    h = hashlib.sha256()
    for arr in (routes, steps):
        arr = np.ascontiguousarray(arr, dtype="<i8")
        h.update(json.dumps(list(arr.shape)).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def content_sha256(counts: np.ndarray) -> str:
    """Checksum of the counts independent of dtype width and memory layout."""
    arr = np.ascontiguousarray(counts, dtype="<i8")
    h = hashlib.sha256()
    h.update(json.dumps(list(arr.shape)).encode())
    h.update(memoryview(arr).cast("B"))  # no copy of a large trace
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
    """Write a compressed `.npz` holding `counts`, route samples if any, and JSON metadata (never pickle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(trace.meta, sha256=trace.sha256)
    arrays: dict[str, np.ndarray] = {"counts": trace.counts}
    meta.pop("routes_sha256", None)
    if trace.routes is not None and trace.route_steps is not None:
        arrays.update(routes=trace.routes, route_steps=trace.route_steps)
        meta["routes_sha256"] = trace.routes_sha256
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays, meta=np.array(json.dumps(meta, sort_keys=True)))
    tmp.replace(path)
    return path


def max_trace_bytes() -> int:
    """The most a trace file's arrays may take once decompressed: an eighth of this machine's memory (a
    campaign holds a trace's splits and windows beside it; the largest bundled dataset takes 0.3 GB). A
    compressed file of a few MB can hold gigabytes of zeros."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8
    except (ValueError, OSError):
        return 2 * 2**30


def check_npz_size(data: Any, names: list[str], path: str | Path) -> None:
    """Refuse, before decompressing anything, an `.npz` whose arrays `names` would not fit (see `max_trace_bytes`).

    The zip directory records each member's decompressed size, and the reader never returns more than that."""
    listed = set(data.zip.namelist())
    total = 0
    for name in names:
        member = f"{name}.npy" if f"{name}.npy" in listed else name
        if member in listed:
            total += data.zip.getinfo(member).file_size
    limit = max_trace_bytes()
    if total > limit:
        raise TraceError(f"{path}: its arrays take {_size(total)} once decompressed, more than this machine can load "
                         f"({_size(limit)}, an eighth of its memory)")


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def check_meta(meta: Any) -> dict[str, Any]:
    """The metadata of a trace file: a JSON object whose keys the evaluator reads have the expected types."""
    if not isinstance(meta, dict):
        raise TraceError(f"the trace metadata must be a JSON object, found {type(meta).__name__}")
    for where, table, values in (("", META_TYPES, meta), ("model.", MODEL_TYPES, meta.get("model") or {})):
        for key, types in table.items():
            if key not in values:
                continue
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, types) or (
                    isinstance(value, int) and not 0 <= value <= MAX_META_INT):
                wanted = " or ".join("null" if t is type(None) else {"str": "a string", "int": "a whole number",
                                                                      "dict": "an object", "list": "a list"}[t.__name__]
                                     for t in types)
                raise TraceError(f"the trace metadata's '{where}{key}' must be {wanted}"
                                 f"{' in [0, 2**31]' if int in types else ''}, found {json.dumps(value)[:40]}")
    return meta


def read_npz_meta(path: str | Path) -> dict[str, Any]:
    """Only the JSON metadata of a `.npz` trace (the counts are not read); {} when it has none or is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            check_npz_size(data, ["meta"], path)
            meta = check_meta(json.loads(str(data["meta"]))) if "meta" in data.files else {}
    except Exception:  # listing datasets must not fail on one bad file; loading it names the problem
        return {}
    return meta


def load_npz(path: str | Path) -> Trace:
    """Read a trace written by `save_npz` (or any `.npz` with a `counts` array, route samples optional)."""
    path = Path(path)
    if not path.exists():
        raise TraceError(f"{path}: no such trace file; give a dataset name (see `eplb-evolve traces list`) or a path")
    if not path.is_file():  # a FIFO or a device would block the read or never end
        raise TraceError(f"{path}: not a regular file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "counts" not in data.files:
                raise TraceError(f"{path}: .npz has no 'counts' array (has: {', '.join(data.files) or 'nothing'})")
            check_npz_size(data, ["counts", "meta", "routes", "route_steps"], path)
            counts = data["counts"]
            meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
            routes = data["routes"] if "routes" in data.files else None
            route_steps = data["route_steps"] if "route_steps" in data.files else None
    except TraceError:
        raise
    except Exception as exc:  # zip errors, truncated files, pickled objects
        raise TraceError(f"{path}: not a readable .npz trace ({type(exc).__name__}: {exc})") from None
    try:
        trace = Trace(counts, check_meta(meta), routes, route_steps)
    except TraceError as exc:
        raise TraceError(f"{path}: {exc}") from None
    expected = meta.get("sha256")
    if expected and expected != trace.sha256:
        raise TraceError(f"{path}: content checksum {trace.sha256[:12]} does not match the recorded {expected[:12]}; "
                         "the file is corrupt, regenerate or re-import it")
    expected_routes = meta.get("routes_sha256")
    if expected_routes and expected_routes != trace.routes_sha256:
        raise TraceError(f"{path}: route samples do not match their recorded checksum {str(expected_routes)[:12]}; "
                         "the file is corrupt, regenerate it")
    trace.meta.setdefault("source", str(path))
    return trace
