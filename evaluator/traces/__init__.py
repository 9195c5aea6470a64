"""Expert-load traces: the `Trace` type (`trace`), named datasets (`registry`), the simulated router
(`generator`), file formats (`formats`), the model shape a trace is scored with (`shape`), statistics
against published figures (`stats`) and the `eplb-evolve traces` command (`cli`).

The names most callers need are re-exported here.
"""
from evaluator.traces.registry import (
    DEFAULT_DATASET,
    DEFAULT_PARTIAL,
    DEFAULT_SPLIT,
    SPLITS,
    USER_SPLITS,
    DatasetInfo,
    Manifest,
    cache_dir,
    dataset_trace,
    generate_split,
    list_datasets,
    load_trace,
    manifests,
    read_manifest,
    save_user_dataset,
    trace_origin,
    user_dataset_path,
    user_datasets,
)
from evaluator.traces.shape import resolve_model
from evaluator.traces.trace import Trace, TraceError, content_sha256, load_npz, save_npz, windows

__all__ = [
    "DEFAULT_DATASET", "DEFAULT_PARTIAL", "DEFAULT_SPLIT", "SPLITS", "USER_SPLITS", "DatasetInfo", "Manifest", "Trace",
    "TraceError",
    "cache_dir", "content_sha256", "dataset_trace", "generate_split", "list_datasets", "load_npz",
    "load_trace", "manifests", "read_manifest", "resolve_model", "save_npz", "save_user_dataset", "user_dataset_path",
    "trace_origin", "user_datasets", "windows",
]
