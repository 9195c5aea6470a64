"""Reading and writing expert-load traces in other tools' formats.

Why: users who have real traces must be able to score on them, and our simulated traces must feed
other harnesses. Formats:

- `adrs-json`: the OpenEvolve / ADRS `expert-load.json` schema,
  `{"load_history": [{"logical_expert_load": [[E ints] x L]}, ...]}`, one entry per forward step.
  Read incrementally (one entry decoded at a time), so a 224 MB file never exists as a Python object
  tree; written one entry at a time as well.
- `sglang`: SGLang's expert distribution recorder dump in `stat` mode, a torch file holding a dict
  with `logical_count` `[steps, L, E]` (a `[L, E]` total is read as one step). Loaded with
  `weights_only=True`: no pickled code runs.
- `trtllm`: TensorRT-LLM expert statistics, a folder with `meta_info.json` and `rank{r}.safetensors`.
  Assumed layout (as written by its expert-statistic dumper): every rank file holds one 1-D tensor of
  per-expert counts per (iteration, layer) named `"{iteration}_{layer}"`; the ranks' tensors are summed.
  Iterations must be contiguous; layer ids (which need not start at 0) are kept in order and recorded
  in the metadata. Safetensors is parsed here: 8-byte little-endian header length, JSON header, raw bytes.
- `npz`: our own storage (a `counts` array, or a single 3-D array), and `csv`: long format with header
  `step,layer,expert,count` (absent rows are zero).

Every problem with a file is a `TraceError` whose message is one line naming the file, the entry and
the problem.
"""
from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import numpy as np
import torch

from evaluator.traces.trace import Trace, TraceError, check_npz_size, load_npz, max_trace_bytes, save_npz

_WS = re.compile(r"[ \t\n\r]*")
_CHUNK = 1 << 20


# ----------------------------------------------------------------------------------------------------
# Validation shared by every reader
# ----------------------------------------------------------------------------------------------------
def as_counts(values: Any, where: str) -> np.ndarray:
    """Whole, non-negative numbers as int64, or a TraceError naming `where` and the first bad value."""
    arr = np.asarray(values)
    if arr.dtype.kind == "b":
        raise TraceError(f"{where}: counts are booleans, expected whole numbers")
    if arr.dtype.kind not in "iuf":
        raise TraceError(f"{where}: counts must be numbers, found {arr.dtype.name} values")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise TraceError(f"{where}: non-integer count {arr[idx].item()!r} at {_index_name(idx)}")
    if arr.size and arr.min() < 0:
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise TraceError(f"{where}: negative count {arr[idx].item()} at {_index_name(idx)}")
    return arr.astype(np.int64)


def _index_name(idx: tuple[int, ...]) -> str:
    names = ("step", "layer", "expert")[-len(idx):] if len(idx) <= 3 else [f"axis {i}" for i in range(len(idx))]
    return ", ".join(f"{n} {i}" for n, i in zip(names, idx))


# ----------------------------------------------------------------------------------------------------
# ADRS / OpenEvolve expert-load.json: an incremental reader
# ----------------------------------------------------------------------------------------------------
class _JsonStream:
    """Decode one JSON value at a time from a text file, holding only the undecoded tail in memory."""

    def __init__(self, fh: TextIO, path: Path) -> None:
        from tqdm import tqdm

        self.fh, self.path = fh, path
        self.buf, self.pos, self.eof = "", 0, False
        self.decoder = json.JSONDecoder()
        size = path.stat().st_size if path.is_file() else None  # a large file takes a while: show how far
        self.bar = tqdm(total=size, desc=f"reading {path.name}", unit="B", unit_scale=True, leave=False,
                        disable=None if size and size > _CHUNK else True, file=sys.stderr)

    def _fill(self) -> bool:
        data = self.fh.read(_CHUNK)
        self.bar.update(len(data))
        if not data:
            self.eof = True
            self.bar.close()
            return False
        self.buf = self.buf[self.pos:] + data
        self.pos = 0
        return True

    def peek(self) -> str | None:
        """The next non-blank character (not consumed), or None at the end of the file."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return None

    def take(self, char: str, what: str) -> None:
        found = self.peek()
        if found != char:
            got = "the end of the file" if found is None else repr(found)
            raise TraceError(f"{self.path}: {what}: expected {char!r}, found {got}"
                             + (" (file is truncated)" if found is None else ""))
        self.pos += 1

    def value(self, what: str) -> Any:
        """Decode the next value; read more of the file while it is incomplete."""
        if self.peek() is None:
            raise TraceError(f"{self.path}: {what}: the file ends here (file is truncated)")
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                incomplete = exc.pos >= len(self.buf) - 1 or exc.msg.startswith("Unterminated string")
                if incomplete and not self.eof and self._fill():
                    continue
                if incomplete:
                    raise TraceError(f"{self.path}: {what}: the file ends inside it (file is truncated)") from None
                line = self.buf.count("\n", 0, exc.pos)
                raise TraceError(
                    f"{self.path}: {what}: invalid JSON ({exc.msg}, {line} lines into the entry)") from None
            if end == len(self.buf) and isinstance(obj, (int, float)) and not self.eof and self._fill():
                continue  # a number cut at the chunk edge may go on
            self.pos = end
            return obj


def iter_adrs_json(path: str | Path) -> Iterator[np.ndarray]:
    """Yield each entry's `[L, E]` counts, validated, decoding one entry at a time."""
    path = Path(path)
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot open ({exc.strerror})") from None
    with fh:
        stream = _JsonStream(fh, path)
        first = stream.peek()
        if first is None:
            raise TraceError(f"{path}: the file is empty; expected {{\"load_history\": [...]}}")
        if first != "{":
            raise TraceError(f"{path}: wrong schema: the top level must be an object with a 'load_history' list")
        stream.pos += 1
        found = False
        while True:
            if stream.peek() == "}":
                stream.pos += 1
                break
            key = stream.value("a top-level key")
            if not isinstance(key, str):
                raise TraceError(f"{path}: invalid JSON: object keys must be strings")
            stream.take(":", f"after key {key!r}")
            if key == "load_history":
                found = True
                yield from _history_entries(stream, path)
            else:
                stream.value(f"the value of {key!r}")
            nxt = stream.peek()
            if nxt == ",":
                stream.pos += 1
            elif nxt != "}":
                got = "the end of the file (file is truncated)" if nxt is None else repr(nxt)
                raise TraceError(f"{path}: after the value of {key!r}: expected ',' or '}}', found {got}")
        if not found:
            raise TraceError(f"{path}: wrong schema: no 'load_history' key at the top level")


def _history_entries(stream: _JsonStream, path: Path) -> Iterator[np.ndarray]:
    if stream.peek() != "[":
        raise TraceError(f"{path}: wrong schema: 'load_history' must be a list of entries")
    stream.pos += 1
    if stream.peek() == "]":
        raise TraceError(f"{path}: 'load_history' is empty: no steps to read")
    shape: tuple[int, int] | None = None
    index = 0
    while True:
        entry = stream.value(f"entry {index}")
        counts = _entry_counts(entry, index, shape, path)
        shape = counts.shape
        yield counts
        nxt = stream.peek()
        if nxt == ",":
            stream.pos += 1
            index += 1
        elif nxt == "]":
            stream.pos += 1
            return
        else:
            got = "the end of the file (file is truncated)" if nxt is None else repr(nxt)
            raise TraceError(f"{path}: after entry {index}: expected ',' or ']', found {got}")


def _entry_counts(entry: Any, index: int, shape: tuple[int, int] | None, path: Path) -> np.ndarray:
    where = f"{path}: entry {index}"
    if not isinstance(entry, dict) or "logical_expert_load" not in entry:
        raise TraceError(f"{where}: wrong schema: expected an object with 'logical_expert_load'")
    rows = entry["logical_expert_load"]
    if not isinstance(rows, list) or not rows:
        raise TraceError(f"{where}: 'logical_expert_load' must be a non-empty list of layers")
    width = len(rows[0]) if isinstance(rows[0], list) else -1
    for layer, row in enumerate(rows):
        if not isinstance(row, list):
            raise TraceError(f"{where}: layer {layer} is not a list of expert counts")
        if len(row) != width:
            raise TraceError(f"{where}: ragged rows: layer {layer} has {len(row)} experts, layer 0 has {width}")
    if width == 0:
        raise TraceError(f"{where}: layers have no experts")
    if shape is not None and (len(rows), width) != shape:
        raise TraceError(f"{where}: shape {len(rows)}x{width} (layers x experts) differs from entry 0's "
                         f"{shape[0]}x{shape[1]}")
    return as_counts(rows, where)


def read_adrs_json(path: str | Path) -> Trace:
    """Import an `expert-load.json` holding at most ~1.5x the final int64 array in memory.

    Entries are kept as int32 while the file is read (the step count is unknown until the end), then
    copied into the int64 array one by one, each freed as it is copied.
    """
    entries = [e.astype(np.int32) if e.max() < 2**31 else e for e in iter_adrs_json(path)]
    counts = np.empty((len(entries), *entries[0].shape), dtype=np.int64)
    for i in range(len(entries)):
        counts[i] = entries[i]
        entries[i] = None  # type: ignore[call-overload]  # free as we go
    return Trace(counts, {"source": str(path), "format": "adrs-json"})


def write_adrs_json(trace: Trace, path: str | Path) -> Path:
    """Export in the ADRS schema, one entry per step, written incrementally."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write('{"load_history": [')
        for step in range(trace.steps):
            if step:
                fh.write(",")
            fh.write('\n{"logical_expert_load": ')
            fh.write(json.dumps(trace.counts[step].tolist(), separators=(",", ":")))
            fh.write("}")
        fh.write("\n]}\n")
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------------------------------
# SGLang expert distribution recorder (stat mode)
# ----------------------------------------------------------------------------------------------------
def read_sglang(path: str | Path) -> Trace:
    path = Path(path)
    if not path.exists():
        raise TraceError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise TraceError(f"{path}: the file is empty; expected a torch file with 'logical_count'")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated zip, not a torch file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(f"{path}: not a readable torch file ({first})") from None
    if isinstance(obj, dict):
        if "logical_count" not in obj:
            keys = ", ".join(map(str, obj)) or "nothing"
            raise TraceError(f"{path}: wrong schema: no 'logical_count' (has: {keys})")
        data = obj["logical_count"]
    else:
        data = obj
    if not isinstance(data, torch.Tensor):
        raise TraceError(f"{path}: wrong schema: 'logical_count' must be a tensor, found {type(data).__name__}")
    if data.dim() == 2:
        data = data.unsqueeze(0)
    if data.dim() != 3 or data.numel() == 0:
        raise TraceError(f"{path}: 'logical_count' must be [steps, layers, experts], got shape {tuple(data.shape)}")
    counts = as_counts(data.detach().cpu().numpy(), f"{path}: logical_count")
    return Trace(counts, {"source": str(path), "format": "sglang"})


# ----------------------------------------------------------------------------------------------------
# TensorRT-LLM expert statistics (meta_info.json + rank{r}.safetensors)
# ----------------------------------------------------------------------------------------------------
_ST_DTYPES = {
    "I8": "<i1", "U8": "<u1", "I16": "<i2", "U16": "<u2", "I32": "<i4", "U32": "<u4",
    "I64": "<i8", "U64": "<u8", "F32": "<f4", "F64": "<f8", "F16": "<f2",
}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Parse a safetensors file: u64 LE header length, JSON header, then raw tensor bytes."""
    path = Path(path)
    if not path.is_file():  # a FIFO named like a rank file would block the read
        raise TraceError(f"{path}: not a regular file")
    raw = path.read_bytes()
    if len(raw) < 8:
        raise TraceError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
    (size,) = struct.unpack("<Q", raw[:8])
    if size > len(raw) - 8:
        raise TraceError(f"{path}: header length {size} runs past the end of the file (file is truncated)")
    try:
        header = json.loads(raw[8: 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(f"{path}: unreadable safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise TraceError(f"{path}: safetensors header must be a JSON object")
    data = memoryview(raw)[8 + size:]
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, stop) = _ST_DTYPES[info["dtype"]], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise TraceError(f"{path}: tensor {name!r}: unsupported or malformed entry {info!r}") from None
        if not 0 <= start <= stop <= len(data):
            raise TraceError(f"{path}: tensor {name!r}: data runs past the end of the file (file is truncated)")
        arr = np.frombuffer(data[start:stop], dtype=dtype)
        if arr.size != int(np.prod(shape)):
            raise TraceError(f"{path}: tensor {name!r}: {arr.size} values do not fill shape {shape}")
        tensors[name] = arr.reshape(shape)
    return tensors


def write_safetensors(tensors: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write tensors in the safetensors layout (used to export TensorRT-LLM-style statistics)."""
    names = {np.dtype(v): k for k, v in _ST_DTYPES.items()}
    header: dict[str, Any] = {}
    blobs: list[bytes] = []
    offset = 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        blob = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[arr.dtype.newbyteorder("<")], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    path = Path(path)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    return path


def read_trtllm(path: str | Path) -> Trace:
    """Import a TensorRT-LLM statistics folder (or its `meta_info.json`)."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    meta_path = folder / "meta_info.json"
    if not meta_path.is_file():
        raise TraceError(f"{folder}: no meta_info.json: give the folder holding meta_info.json and rank*.safetensors")
    try:
        info = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise TraceError(f"{meta_path}: invalid JSON ({exc.msg})") from None
    if not isinstance(info, dict):
        raise TraceError(f"{meta_path}: wrong schema: expected a JSON object")
    rank_files = sorted(folder.glob("rank*.safetensors"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if not rank_files:
        raise TraceError(f"{folder}: no rank*.safetensors files beside meta_info.json")
    total: dict[tuple[int, int], np.ndarray] = {}
    for rank_file in rank_files:
        for name, arr in read_safetensors(rank_file).items():
            match = re.fullmatch(r"(\d+)_(\d+)", name)
            if not match:
                raise TraceError(f"{rank_file}: tensor {name!r}: expected names '<iteration>_<layer>'")
            if arr.ndim != 1:
                raise TraceError(f"{rank_file}: tensor {name!r}: expected per-expert counts [experts], got shape "
                                 f"{list(arr.shape)}")
            key = (int(match[1]), int(match[2]))
            counts = as_counts(arr, f"{rank_file}: tensor {name!r}")
            if key in total:
                if total[key].shape != counts.shape:
                    raise TraceError(f"{rank_file}: tensor {name!r}: {counts.size} experts, other ranks have "
                                     f"{total[key].size}")
                total[key] = total[key] + counts
            else:
                total[key] = counts
    iters = sorted({i for i, _ in total})
    layers = sorted({layer for _, layer in total})
    if iters[-1] - iters[0] + 1 != len(iters):
        raise TraceError(f"{folder}: iterations are not contiguous ({iters[0]}..{iters[-1]} with {len(iters)} present)")
    widths = {v.size for v in total.values()}
    if len(widths) != 1:
        raise TraceError(f"{folder}: tensors disagree on the number of experts ({sorted(widths)})")
    experts = widths.pop()
    if "num_experts" in info and int(info["num_experts"]) != experts:
        raise TraceError(f"{meta_path}: num_experts {info['num_experts']} but the tensors hold {experts} experts")
    counts = np.zeros((len(iters), len(layers), experts), dtype=np.int64)
    for i, it in enumerate(iters):
        for j, layer in enumerate(layers):
            if (it, layer) not in total:
                raise TraceError(f"{folder}: no counts for iteration {it}, layer {layer} in any rank file")
            counts[i, j] = total[(it, layer)]
    meta = {"source": str(folder), "format": "trtllm", "layer_ids": layers, "iteration_start": iters[0],
            "ranks": len(rank_files)}
    if "num_experts_per_token" in info:
        meta["top_k"] = int(info["num_experts_per_token"])
    return Trace(counts, meta)


# ----------------------------------------------------------------------------------------------------
# npz and csv
# ----------------------------------------------------------------------------------------------------
def read_npz(path: str | Path) -> Trace:
    """Our `.npz` (with `counts`), or any `.npz` holding exactly one 3-D array."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            files = list(data.files)
            if "counts" not in files and len(files) == 1:
                check_npz_size(data, files, path)
            single = data[files[0]] if "counts" not in files and len(files) == 1 else None
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except TraceError:
        raise
    except Exception as exc:
        raise TraceError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    if single is None:
        return load_npz(path)
    if single.ndim != 3:
        raise TraceError(f"{path}: array {files[0]!r} must be [steps, layers, experts], got shape {single.shape}")
    return Trace(as_counts(single, f"{path}: {files[0]}"), {"source": str(path), "format": "npz"})


def read_csv(path: str | Path) -> Trace:
    """Long format: header `step,layer,expert,count`; steps, layers and experts number from 0."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise TraceError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise TraceError(f"{path}: the file is empty; expected a header step,layer,expert,count")
    try:
        frame = pd.read_csv(path)
    except Exception as exc:
        raise TraceError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    need = ["step", "layer", "expert", "count"]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise TraceError(f"{path}: wrong schema: missing column(s) {', '.join(missing)}; expected header "
                         "step,layer,expert,count")
    if frame.empty:
        raise TraceError(f"{path}: no rows below the header")
    for col in need:
        if not pd.api.types.is_numeric_dtype(frame[col]):
            row = int(pd.to_numeric(frame[col], errors="coerce").isna().to_numpy().argmax())
            raise TraceError(f"{path}: row {row + 1}: column '{col}' holds {frame[col].iloc[row]!r}, not a number")
    index = {c: frame[c].to_numpy() for c in need}
    for col in need:
        values = index[col]
        bad = (values < 0) | (values > 2**53)  # past 2**53 a float is no exact whole number, and int64 wraps
        if values.dtype.kind == "f":
            bad |= values != np.round(values)
        if bad.any():
            row = int(np.argmax(bad))
            raise TraceError(f"{path}: row {row + 1}: column '{col}' holds {values[row].item()!r}; expected a whole "
                             "number from 0 to 2**53")
    s, layer, e = (index[c].astype(np.int64) for c in ("step", "layer", "expert"))
    shape = (int(s.max()) + 1, int(layer.max()) + 1, int(e.max()) + 1)
    if 8 * shape[0] * shape[1] * shape[2] > max_trace_bytes():  # one row naming step 10**9 declares terabytes
        raise TraceError(f"{path}: its largest step, layer and expert ({shape[0] - 1}, {shape[1] - 1}, {shape[2] - 1}) "
                         f"make a {list(shape)} trace, more than this machine can load (an eighth of its memory)")
    counts = np.zeros(shape, dtype=np.int64)
    np.add.at(counts, (s, layer, e), index["count"].astype(np.int64))
    return Trace(counts, {"source": str(path), "format": "csv"})


def write_csv(trace: Trace, path: str | Path) -> Path:
    """Long format, non-zero counts only."""
    path = Path(path)
    s, layer, e = np.nonzero(trace.counts)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("step,layer,expert,count\n")
        np.savetxt(fh, np.stack([s, layer, e, trace.counts[s, layer, e]], axis=1), fmt="%d", delimiter=",")
    return path


# ----------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------
READERS: dict[str, Callable[[Path], Trace]] = {
    "adrs-json": read_adrs_json,
    "sglang": read_sglang,
    "trtllm": read_trtllm,
    "npz": read_npz,
    "csv": read_csv,
}
WRITERS: dict[str, Callable[[Trace, Path], Path]] = {
    "adrs-json": write_adrs_json,
    "npz": save_npz,
    "csv": write_csv,
}


def detect_format(path: str | Path) -> str:
    """Guess a format from the path: folder or meta_info.json -> trtllm, then by suffix."""
    path = Path(path)
    if path.is_dir() or path.name == "meta_info.json":
        return "trtllm"
    suffix = path.suffix.lower()
    by_suffix = {".json": "adrs-json", ".pt": "sglang", ".pth": "sglang", ".npz": "npz", ".csv": "csv"}
    if suffix not in by_suffix:
        raise TraceError(f"{path}: cannot tell the format from the name; pass --format ({', '.join(READERS)})")
    return by_suffix[suffix]


def read_trace(path: str | Path, fmt: str | None = None) -> Trace:
    """Read any supported format (guessed from the path when `fmt` is None)."""
    path = Path(path)
    if not path.exists():
        raise TraceError(f"{path}: no such file or folder")
    if not (path.is_file() or path.is_dir()):  # a FIFO or a device would block the read or never end
        raise TraceError(f"{path}: not a regular file or folder")
    fmt = fmt or detect_format(path)
    if fmt not in READERS:
        raise TraceError(f"unknown trace format '{fmt}'; known: {', '.join(READERS)}")
    trace = READERS[fmt](path)
    trace.meta.setdefault("format", fmt)
    return trace


def write_trace(trace: Trace, path: str | Path, fmt: str) -> Path:
    if fmt not in WRITERS:
        raise TraceError(f"cannot export to '{fmt}'; export formats: {', '.join(WRITERS)}")
    return WRITERS[fmt](trace, Path(path))
