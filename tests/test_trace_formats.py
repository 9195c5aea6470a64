"""Importers and exporters: round trips, the incremental ADRS reader, and one clear line per bad file."""
from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluator.traces import Trace, TraceError, load_trace, save_npz
from evaluator.traces import formats as tf


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------------------------------
# ADRS expert-load.json
# ----------------------------------------------------------------------------------------------------
def test_adrs_round_trip_gives_identical_windows(small_trace: Trace, tmp_path: Path) -> None:
    out = tf.write_adrs_json(small_trace, tmp_path / "expert-load.json")
    data = json.loads(out.read_text())
    assert len(data["load_history"]) == small_trace.steps
    assert np.array_equal(data["load_history"][7]["logical_expert_load"], small_trace.counts[7])
    back = tf.read_adrs_json(out)
    assert np.array_equal(back.counts, small_trace.counts)
    assert back.sha256 == small_trace.sha256
    assert torch.equal(back.windows(100), small_trace.windows(100))


def test_adrs_reader_survives_tiny_chunks(small_trace: Trace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every value, key and number gets cut at a chunk edge somewhere; the result must not change."""
    trace = small_trace.slice_steps(0, 12)
    path = tmp_path / "load.json"
    text = json.dumps({"note": {"model": "x", "v": [1, 2.5]}, "load_history": [
        {"logical_expert_load": trace.counts[i].tolist(), "step": i} for i in range(trace.steps)
    ], "tail": 12345})
    path.write_text(text)
    for chunk in (1, 3, 7, 64):
        monkeypatch.setattr(tf, "_CHUNK", chunk)
        assert np.array_equal(tf.read_adrs_json(path).counts, trace.counts)


def test_adrs_reader_memory_stays_near_one_copy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5000, size=(60, 58, 256))
    path = tf.write_adrs_json(Trace(counts), tmp_path / "big.json")
    final_bytes = counts.nbytes
    tracemalloc.start()
    try:
        trace = tf.read_adrs_json(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(trace.counts, counts)
    # the int64 result plus int32 entries plus one decoded entry and the read buffer
    assert peak < 1.5 * final_bytes + 8 * 2**20, (
        f"peak {peak / 2**20:.1f} MiB for a {final_bytes / 2**20:.1f} MiB trace")


BAD_ADRS = {
    "empty": ("", "empty"),
    "blank": ("  \n ", "empty"),
    "top-level list": ('[{"logical_expert_load": [[1]]}]', "wrong schema"),
    "no load_history": ('{"history": []}', "no 'load_history'"),
    "load_history not a list": ('{"load_history": {"a": 1}}', "must be a list"),
    "empty history": ('{"load_history": []}', "empty"),
    "entry not an object": ('{"load_history": [[[1, 2]]]}', "entry 0: wrong schema"),
    "entry lacks key": ('{"load_history": [{"expert_load": [[1, 2]]}]}', "entry 0: wrong schema"),
    "layers not a list": ('{"load_history": [{"logical_expert_load": 5}]}', "entry 0: 'logical_expert_load'"),
    "layer not a list": ('{"load_history": [{"logical_expert_load": [[1, 2], 3]}]}', "entry 0: layer 1 is not a list"),
    "ragged rows": ('{"load_history": [{"logical_expert_load": [[1, 2], [3]]}]}',
                    "entry 0: ragged rows: layer 1 has 1 experts"),
    "shape changes": (
        '{"load_history": [{"logical_expert_load": [[1, 2]]}, {"logical_expert_load": [[1, 2, 3]]}]}',
        "entry 1: shape 1x3",
    ),
    "negative": ('{"load_history": [{"logical_expert_load": [[1, 2]]}, {"logical_expert_load": [[4, -2]]}]}',
                 "entry 1: negative count -2 at layer 0, expert 1"),
    "fractional": ('{"load_history": [{"logical_expert_load": [[1, 2.5]]}]}',
                   "entry 0: non-integer count 2.5 at layer 0, expert 1"),
    "string count": ('{"load_history": [{"logical_expert_load": [[1, "2"]]}]}', "entry 0: counts must be numbers"),
    "boolean counts": ('{"load_history": [{"logical_expert_load": [[true, false]]}]}', "entry 0: counts are booleans"),
    "null count": ('{"load_history": [{"logical_expert_load": [[1, null]]}]}', "entry 0: counts must be numbers"),
    "truncated mid entry": ('{"load_history": [{"logical_expert_load": [[1, 2]]}, {"logical_expert_load": [[3, ',
                            "entry 1: the file ends inside it (file is truncated)"),
    "truncated after entry": ('{"load_history": [{"logical_expert_load": [[1, 2]]}',
                              "after entry 0: expected ',' or ']', found the end of the file (file is truncated)"),
    "truncated after list": ('{"load_history": [{"logical_expert_load": [[1, 2]]}]', "file is truncated"),
    "invalid syntax": ('{"load_history": [{"logical_expert_load": [[1, 2]]}, {"logical_expert_load": [[1 2]]}, {"a": '
                       '1}]}', "entry 1: invalid JSON"),
    "garbage between entries": ('{"load_history": [{"logical_expert_load": [[1, 2]]} x {"logical_expert_load": [[1, '
                                '2]]}]}', "after entry 0: expected ',' or ']'"),
}


@pytest.mark.parametrize("case", sorted(BAD_ADRS))
def test_bad_adrs_file_gives_one_clear_line(case: str, tmp_path: Path) -> None:
    text, expected = BAD_ADRS[case]
    path = tmp_path / "expert-load.json"
    path.write_text(text)
    with pytest.raises(TraceError) as exc:
        tf.read_adrs_json(path)
    message = one_line(exc)
    assert message.startswith(str(path)), message
    assert expected in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        tf.read_trace(tmp_path / "nope.json")


# ----------------------------------------------------------------------------------------------------
# SGLang
# ----------------------------------------------------------------------------------------------------
def test_sglang_dump_round_trip(small_trace: Trace, tmp_path: Path) -> None:
    path = tmp_path / "expert_distribution_recorder.pt"
    torch.save({"rank": 0, "logical_count": torch.from_numpy(small_trace.counts).to(torch.int32)}, path)
    trace = tf.read_trace(path)
    assert trace.meta["format"] == "sglang"
    assert np.array_equal(trace.counts, small_trace.counts)


def test_sglang_total_is_one_step(tmp_path: Path) -> None:
    path = tmp_path / "total.pt"
    torch.save({"logical_count": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}, path)
    trace = tf.read_sglang(path)
    assert trace.counts.shape == (1, 2, 2) and trace.counts.dtype == np.int64


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"physical_count": torch.zeros(2, 2, 2)}, "no 'logical_count' (has: physical_count)"),
        ({"logical_count": [1, 2]}, "must be a tensor"),
        ({"logical_count": torch.zeros(4)}, "must be [steps, layers, experts]"),
        ({"logical_count": torch.tensor([[[1.0, 0.5]]])}, "non-integer count 0.5 at step 0, layer 0, expert 1"),
        ({"logical_count": torch.tensor([[[1, -3]]])}, "negative count -3"),
    ],
)
def test_bad_sglang_dump(payload: dict, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "dump.pt"
    torch.save(payload, path)
    with pytest.raises(TraceError) as exc:
        tf.read_sglang(path)
    assert str(path) in one_line(exc) and expected in str(exc.value)


class _NotAllowed:
    pass


@pytest.mark.parametrize("content", [b"", b"this is not a torch file", "pickled-object"])
def test_unreadable_sglang_file(content, tmp_path: Path) -> None:
    path = tmp_path / "dump.pt"
    if content == "pickled-object":
        torch.save({"logical_count": _NotAllowed()}, path)  # weights_only must refuse to unpickle it
    else:
        path.write_bytes(content)
    with pytest.raises(TraceError) as exc:
        tf.read_sglang(path)
    assert one_line(exc).startswith(str(path))


# ----------------------------------------------------------------------------------------------------
# TensorRT-LLM
# ----------------------------------------------------------------------------------------------------
def write_trtllm(folder: Path, counts: np.ndarray, ranks: int = 2, first_iter: int = 100, first_layer: int = 3) -> None:
    """Split counts over ranks the way per-rank statistics would (each rank saw part of the tokens)."""
    folder.mkdir(parents=True, exist_ok=True)
    steps, layers, experts = counts.shape
    (folder / "meta_info.json").write_text(json.dumps({"num_experts": experts, "num_experts_per_token": 2}))
    share = counts // ranks
    for r in range(ranks):
        part = share if r < ranks - 1 else counts - share * (ranks - 1)
        tensors = {f"{first_iter + i}_{first_layer + j}": part[i, j].astype(np.int32) for i in range(steps)
                   for j in range(layers)}
        tf.write_safetensors(tensors, folder / f"rank{r}.safetensors")


def test_trtllm_statistics_sum_over_ranks(small_trace: Trace, tmp_path: Path) -> None:
    counts = small_trace.counts[:20]
    write_trtllm(tmp_path / "stats", counts, ranks=3)
    trace = tf.read_trace(tmp_path / "stats")
    assert np.array_equal(trace.counts, counts)
    assert trace.meta["layer_ids"] == [3, 4, 5, 6] and trace.meta["iteration_start"] == 100
    assert trace.meta["top_k"] == 2
    same = tf.read_trace(tmp_path / "stats" / "meta_info.json")
    assert np.array_equal(same.counts, counts)


def test_trtllm_missing_pieces(small_trace: Trace, tmp_path: Path) -> None:
    folder = tmp_path / "stats"
    write_trtllm(folder, small_trace.counts[:5], ranks=1)
    tensors = tf.read_safetensors(folder / "rank0.safetensors")
    del tensors["102_4"]
    tf.write_safetensors(tensors, folder / "rank0.safetensors")
    with pytest.raises(TraceError, match="no counts for iteration 102, layer 4"):
        tf.read_trtllm(folder)
    tensors["oops"] = np.zeros(16, dtype=np.int32)
    tf.write_safetensors(tensors, folder / "rank0.safetensors")
    with pytest.raises(TraceError, match="expected names '<iteration>_<layer>'"):
        tf.read_trtllm(folder)


def test_trtllm_truncated_and_absent(small_trace: Trace, tmp_path: Path) -> None:
    folder = tmp_path / "stats"
    write_trtllm(folder, small_trace.counts[:5], ranks=1)
    raw = (folder / "rank0.safetensors").read_bytes()
    (folder / "rank0.safetensors").write_bytes(raw[:-40])
    with pytest.raises(TraceError) as exc:
        tf.read_trtllm(folder)
    assert "rank0.safetensors" in one_line(exc) and "truncated" in str(exc.value)
    with pytest.raises(TraceError, match="no meta_info.json"):
        tf.read_trtllm(tmp_path)


# ----------------------------------------------------------------------------------------------------
# npz and csv
# ----------------------------------------------------------------------------------------------------
def test_npz_and_csv_round_trips(small_trace: Trace, tmp_path: Path) -> None:
    save_npz(small_trace, tmp_path / "t.npz")
    assert tf.read_trace(tmp_path / "t.npz").sha256 == small_trace.sha256
    np.savez_compressed(tmp_path / "plain.npz", loads=small_trace.counts)
    assert tf.read_trace(tmp_path / "plain.npz").sha256 == small_trace.sha256
    tf.write_csv(small_trace, tmp_path / "t.csv")
    assert tf.read_trace(tmp_path / "t.csv").sha256 == small_trace.sha256


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "empty"),
        ("step,layer,count\n0,0,1\n", "missing column(s) expert"),
        ("step,layer,expert,count\n", "no rows"),
        ("step,layer,expert,count\n0,0,0,5\n0,0,1,-1\n", "row 2: column 'count' holds -1"),
        ("step,layer,expert,count\n0,0,0,5\n0,0,1,2.5\n", "row 2: column 'count' holds 2.5"),
        ("step,layer,expert,count\n0,0,0,5\n0,0,x,2\n", "row 2: column 'expert' holds 'x'"),
    ],
)
def test_bad_csv(text: str, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(TraceError) as exc:
        tf.read_csv(path)
    assert one_line(exc).startswith(str(path)) and expected in str(exc.value)


def test_bad_npz(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(TraceError, match="not a readable .npz"):
        tf.read_trace(tmp_path / "junk.npz")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2, 2)), b=np.zeros(3))
    with pytest.raises(TraceError, match="no 'counts' array"):
        tf.read_trace(tmp_path / "two.npz")
    np.savez(tmp_path / "flat.npz", a=np.zeros((2, 2)))
    with pytest.raises(TraceError, match="must be \\[steps, layers, experts\\]"):
        tf.read_trace(tmp_path / "flat.npz")


def test_unknown_format_and_suffix(tmp_path: Path, small_trace: Trace) -> None:
    path = tmp_path / "trace.bin"
    path.write_bytes(b"x")
    with pytest.raises(TraceError, match="cannot tell the format"):
        tf.read_trace(path)
    with pytest.raises(TraceError, match="unknown trace format 'parquet'"):
        tf.read_trace(path, "parquet")
    with pytest.raises(TraceError, match="cannot export to 'sglang'"):
        tf.write_trace(small_trace, tmp_path / "x.pt", "sglang")


def test_load_trace_reads_any_format_by_path(small_trace: Trace, tmp_path: Path) -> None:
    path = tf.write_adrs_json(small_trace, tmp_path / "expert-load.json")
    trace = load_trace(str(path))
    assert trace.sha256 == small_trace.sha256
    assert trace.meta["name"] == "expert-load" and trace.meta["split"] == "all"
    assert trace.meta["model"]["layers"] == 4 and trace.meta["model"]["experts"] == 16


# ----------------------------------------------------------------------------------------------------
# Route samples: kept by npz, absent from formats that cannot carry them
# ----------------------------------------------------------------------------------------------------
@pytest.fixture
def routed_trace(tiny_shape, small_params) -> Trace:
    from evaluator.traces import generator

    return generator.generate(tiny_shape, small_params, model_seed=1, traffic_seed=2, progress=False)


def test_npz_export_keeps_route_samples_and_other_formats_drop_them(routed_trace: Trace, tmp_path: Path) -> None:
    assert routed_trace.routes is not None
    back = tf.read_trace(tf.write_trace(routed_trace, tmp_path / "t.npz", "npz"))
    assert back.sha256 == routed_trace.sha256 and back.routes_sha256 == routed_trace.routes_sha256
    assert np.array_equal(back.routes, routed_trace.routes)
    assert np.array_equal(back.route_steps, routed_trace.route_steps)
    for fmt, name in (("csv", "t.csv"), ("adrs-json", "t.json")):
        other = tf.read_trace(tf.write_trace(routed_trace, tmp_path / name, fmt))
        assert other.sha256 == routed_trace.sha256
        assert other.routes is None and other.route_steps is None and other.routes_sha256 is None
