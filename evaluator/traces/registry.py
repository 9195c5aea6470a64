"""Named datasets: bundled manifests, imported traces, and `load_trace` that finds either.

A manifest in `datasets/NAME.toml` pins a simulated trace (generator preset, parameters, seeds,
generator version, and the content sha256 of each split), so `load_trace("deepseek-v3")` means the same
numbers everywhere. A split normally shares the dataset's router model (`model_seed`) and differs in
traffic (`traffic_seed`); a split may also name its own `model_seed` (another simulated router of the same
shape: a generalisation test, since it has other hot experts), its own `steps` (a longer holdout) and a
`params` table of generator parameters that replace the dataset's (the `serving` split: the same router
model under serving-shaped batches).
Generated data lives in a git-ignored cache (`<repo>/.cache/traces`, or `$EPLB_EVOLVE_CACHE`), made once
per machine; imported real traces live there too, as user datasets.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import evaluator.traces.formats as formats
import evaluator.traces.generator as generator
from evaluator.paths import DATASETS_DIR, REPO_ROOT
from evaluator.traces.shape import describe, require_groups, resolve_model
from evaluator.traces.trace import Trace, TraceError, load_npz, read_npz_meta, save_npz

DEFAULT_DATASET = "deepseek-v3"
SPLITS = ("search", "holdout")  # every bundled dataset has these two; more are optional
SPLIT_OVERRIDES = ("model_seed", "steps")  # per-split keys that replace the dataset's own values
# Version of what a cache file holds, part of its name: a file written before route samples existed is
# never read as if it had them; it is regenerated under the new name (the old file is left alone).
CACHE_FORMAT = "r1"
USER_SPLITS = ("all", "search", "holdout")  # imported traces: whole, first half, second half
# What a dataset is scored on when no split is named: a bundled dataset's search split (its holdout is kept
# for final reports); an imported trace or a trace file whole, as the published evaluators read it.
DEFAULT_SPLIT = {"bundled": "search", "imported": "all", "file": "all"}
# Whether a trailing window shorter than the window size is scored when the options do not say. Imported
# traces and files: scored, as the published loader does. Bundled datasets: dropped, so every window carries
# the same traffic; their 1,200 (or 600) steps make whole windows at the default 100-step window, so this
# matters only with a window size that does not divide their length.
DEFAULT_PARTIAL = {"bundled": "drop", "imported": "score", "file": "score"}


def cache_dir() -> Path:
    """Where generated and imported traces live: `$EPLB_EVOLVE_CACHE` or `<repo>/.cache/traces`."""
    return Path(os.environ.get("EPLB_EVOLVE_CACHE") or REPO_ROOT / ".cache" / "traces")


@dataclass(frozen=True)
class Manifest:
    """A bundled dataset: what to generate and the checksum each split must have."""

    name: str
    description: str
    preset: str
    generator_version: str
    model_seed: int
    params: dict[str, Any]
    splits: dict[str, dict[str, Any]]  # split -> {"traffic_seed": int, "sha256": str, optional overrides}
    path: Path

    def split_model_seed(self, split: str) -> int:
        """The router model a split was generated from (its own, or the dataset's)."""
        return int(self.splits[split].get("model_seed", self.model_seed))

    def split_params(self, split: str) -> dict[str, Any]:
        """Generator parameters of a split: the dataset's, then the split's `params` table and `steps`."""
        params = dict(self.params)
        params.update(self.splits[split].get("params", {}))
        if "steps" in self.splits[split]:
            params["steps"] = int(self.splits[split]["steps"])
        return params

    def split_summary(self, split: str) -> str:
        """Short words for a split: its router model and traffic seeds and its length."""
        own = self.split_model_seed(split) != self.model_seed
        model = f"other router (model_seed {self.split_model_seed(split)})" if own else f"model_seed {self.model_seed}"
        steps = self.split_params(split).get("steps", "default")
        own_params = self.splits[split].get("params") or {}
        listed = ", ".join(f"{k} {v}" for k, v in sorted(own_params.items()))
        changed = f"; serving batches ({listed})" if own_params else ""
        return f"{model}, traffic_seed {self.splits[split]['traffic_seed']}, {steps} steps{changed}"

    def cache_path(self, split: str) -> Path:
        pinned = self.splits[split].get("sha256") or "unpinned"
        return cache_dir() / f"{self.name}-{split}-{pinned[:16]}.{CACHE_FORMAT}.npz"


def _toml_load(path: Path) -> dict[str, Any]:
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise TraceError(f"{path}: reading dataset manifests needs Python >= 3.11 or the 'tomli' package") from None
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise TraceError(f"{path}: invalid TOML ({exc})") from None


def read_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    data = _toml_load(path)
    need = ("name", "preset", "generator_version", "model_seed", "splits")
    missing = [k for k in need if k not in data]
    if missing:
        raise TraceError(f"{path}: manifest lacks {', '.join(missing)}")
    splits = data["splits"]
    if not isinstance(splits, dict) or not splits:
        raise TraceError(f"{path}: manifest needs [splits.search] and [splits.holdout] tables")
    for split, spec in splits.items():
        if not isinstance(spec, dict) or "traffic_seed" not in spec:
            raise TraceError(f"{path}: split '{split}' needs a traffic_seed")
        for key in ("traffic_seed", *SPLIT_OVERRIDES):
            if key in spec and (not isinstance(spec[key], int) or isinstance(spec[key], bool) or spec[key] < 0):
                raise TraceError(f"{path}: split '{split}': {key} must be a non-negative whole number, got "
                                 f"{spec[key]!r}")
        if spec.get("steps") == 0:
            raise TraceError(f"{path}: split '{split}': steps must be positive")
        if "params" in spec and not isinstance(spec["params"], dict):
            raise TraceError(f"{path}: split '{split}': params must be a table of generator parameters")
    return Manifest(
        name=str(data["name"]),
        description=str(data.get("description", "")),
        preset=str(data["preset"]),
        generator_version=str(data["generator_version"]),
        model_seed=int(data["model_seed"]),
        params=dict(data.get("params", {})),
        splits={str(k): dict(v) for k, v in splits.items()},
        path=path,
    )


def manifests() -> dict[str, Manifest]:
    """Bundled datasets by name (every `datasets/*.toml`)."""
    found: dict[str, Manifest] = {}
    for path in sorted(DATASETS_DIR.glob("*.toml")):
        manifest = read_manifest(path)
        found[manifest.name] = manifest
    return found


def user_dataset_path(name: str) -> Path:
    return cache_dir() / "user" / f"{name}.npz"


def user_datasets() -> list[str]:
    folder = cache_dir() / "user"
    return sorted(p.stem for p in folder.glob("*.npz")) if folder.exists() else []


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str  # "bundled" or "imported"
    splits: tuple[str, ...]  # the default split first
    description: str
    model: str
    cached: tuple[str, ...]  # splits already on this machine
    shape: str = ""  # layers x experts, groups, top-k: `58x256 g8 k8`
    default_split: str = ""
    partial_window: str = ""  # the default for a trailing partial window: score or drop


def list_datasets() -> list[DatasetInfo]:
    """Bundled datasets (the default first) and then imported ones."""
    out = []
    for m in sorted(manifests().values(), key=lambda m: (m.name != DEFAULT_DATASET, m.name)):
        cached = tuple(s for s in m.splits if m.cache_path(s).exists())
        default = DEFAULT_SPLIT["bundled"]
        splits = tuple(sorted(m.splits, key=lambda s: s != default))
        preset = generator.PRESETS.get(m.preset)
        shape = describe(preset.as_meta()) if preset is not None else ""
        out.append(DatasetInfo(m.name, "bundled", splits, m.description, m.preset, cached, shape, default,
                               DEFAULT_PARTIAL["bundled"]))
    for name in user_datasets():
        meta = read_npz_meta(user_dataset_path(name))
        model = meta.get("model") or {}
        steps = meta.get("steps")
        description = f"imported {meta.get('format', 'trace')}" + (f", {steps} steps" if steps else "")
        out.append(DatasetInfo(name, "imported", USER_SPLITS, description, str(model.get("name", "")), USER_SPLITS,
                               describe(model) if model else "?", DEFAULT_SPLIT["imported"],
                               DEFAULT_PARTIAL["imported"]))
    return out


def _known_names() -> str:
    names = list(manifests()) + user_datasets()
    return ", ".join(names) or "none"


def _looks_like_path(spec: str) -> bool:
    return ("/" in spec or os.sep in spec or Path(spec).suffix.lower() in (".npz", ".json", ".pt", ".pth", ".csv")
            or Path(spec).exists())


def load_trace(spec: str, split: str | None = None, progress: bool = True, device: str = "cpu") -> Trace:
    """A trace by dataset name, `NAME:split`, or file path (any importable format).

    Bundled datasets default to the `search` split and are generated into the cache on first use;
    imported datasets and files default to `all` (see `DEFAULT_SPLIT`). The returned metadata always has
    `name`, `split`, `sha256`, `origin` (bundled, imported or file) and `model` (layers, experts, top_k,
    num_groups; num_groups is None when nothing states it, see `evaluator.traces.shape`).
    """
    if _looks_like_path(spec) and not (":" in spec and spec.split(":")[0] in manifests()):
        trace = formats.read_trace(spec)
        if split not in (None, "", "all", "file"):
            raise TraceError(f"a trace file is scored whole: it has no split '{split}' (import it to get search and "
                             "holdout halves)")
        return _stamp(trace, name=str(trace.meta.get("name") or Path(spec).stem), split="all", origin="file")
    name, _, inline = spec.partition(":")
    if inline and split and inline != split:
        raise TraceError(f"dataset '{spec}' names split '{inline}' but split '{split}' was also asked for")
    split = inline or split
    bundled = manifests()
    if name in bundled:
        split = split or DEFAULT_SPLIT["bundled"]
        return _stamp(dataset_trace(bundled[name], split, progress, device), name=name, split=split, origin="bundled")
    if name in user_datasets():
        return _user_trace(name, split or DEFAULT_SPLIT["imported"])
    raise TraceError(f"unknown dataset '{name}'; known: {_known_names()} (or give a path to a trace file)")


def dataset_trace(manifest: Manifest, split: str, progress: bool = True, device: str = "cpu") -> Trace:
    """One split of a bundled dataset: from the cache, or generated, checked and cached."""
    if split not in manifest.splits:
        raise TraceError(f"dataset '{manifest.name}' has no split '{split}'; splits: {', '.join(manifest.splits)}")
    pinned = manifest.splits[split].get("sha256", "")
    path = manifest.cache_path(split)
    if path.exists():
        trace = load_npz(path)
        if pinned and trace.sha256 != pinned:
            raise TraceError(
                f"{path}: checksum mismatch: content sha256 {trace.sha256[:16]} but dataset "
                f"'{manifest.name}:{split}' pins {pinned[:16]}; delete the file to regenerate it"
            )
        if trace.routes is not None or not _wants_routes(manifest, split):
            return trace
        # a file that should carry route samples but does not (written by hand or an older checkout): redo it
    trace = generate_split(manifest, split, progress, device)
    if pinned and trace.sha256 != pinned:
        raise TraceError(
            f"checksum mismatch: generated '{manifest.name}:{split}' has sha256 {trace.sha256[:16]} but "
            f"{manifest.path.name} pins {pinned[:16]}; this machine's generator (numpy/torch build) "
            f"does not reproduce the dataset; import a copy made elsewhere with `eplb-evolve traces import`"
        )
    if not pinned:
        print(f"warning: {manifest.path.name} pins no sha256 for split '{split}'; generated {trace.sha256}",
              file=sys.stderr)
    save_npz(trace, path)
    return trace


def _wants_routes(manifest: Manifest, split: str) -> bool:
    """Whether this code's generator records route samples for the split."""
    try:
        return generator.TraceParams.from_dict(manifest.split_params(split)).route_samples_per_step > 0
    except TraceError:
        return False


def generate_split(manifest: Manifest, split: str, progress: bool = True, device: str = "cpu") -> Trace:
    """Run the generator for one split of a manifest (no cache, no checksum check)."""
    if manifest.generator_version != generator.GENERATOR_VERSION:
        raise TraceError(
            f"dataset '{manifest.name}' was made by generator version {manifest.generator_version}, "
            f"this code has version {generator.GENERATOR_VERSION}; re-pin {manifest.path.name} or use an older checkout"
        )
    params = generator.TraceParams.from_dict(manifest.split_params(split))
    seed = int(manifest.splits[split]["traffic_seed"])
    if progress:  # the bar below names the model shape; this line names the data
        print(f"generating dataset {manifest.name}, split {split} (once per machine, cached in {cache_dir()})",
              file=sys.stderr, flush=True)
    trace = generator.generate(manifest.preset, params, manifest.split_model_seed(split), seed, device=device,
                               progress=progress)
    trace.meta.update(name=manifest.name, split=split, description=manifest.description)
    return trace


def _user_trace(name: str, split: str) -> Trace:
    if split not in USER_SPLITS:
        raise TraceError(f"imported dataset '{name}' has splits {', '.join(USER_SPLITS)}, not '{split}'")
    trace = load_npz(user_dataset_path(name))
    if split != "all":
        # halves at a window boundary (100 steps) when the trace is long enough
        cut = trace.steps // 2
        if trace.steps >= 200:
            cut = (trace.steps // 200) * 100
        trace = trace.slice_steps(0, cut) if split == "search" else trace.slice_steps(cut)
    return _stamp(trace, name=name, split=split, origin="imported")


def save_user_dataset(trace: Trace, name: str, force: bool = False, groups: int | None = None) -> Path:
    """Store an imported trace in the cache so `load_trace(name)` finds it.

    The model shape is recorded with it (`evaluator.traces.shape`): `groups` (the user's `--groups`) wins,
    then what the file states, then the published configuration for 58x256; with none of these the import
    is refused, since a silently assumed group count would change every hierarchical balancer's score.
    """
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise TraceError(f"dataset name '{name}' must be letters, digits, '-', '_' or '.'")
    if name in manifests():
        raise TraceError(f"'{name}' is a bundled dataset; choose another name for the import")
    path = user_dataset_path(name)
    if path.exists() and not force:
        raise TraceError(f"dataset '{name}' already exists ({path}); pass --force to replace it")
    resolve_model(trace, groups)
    require_groups(trace, str(trace.meta.get("format", "trace")))
    _stamp(trace, name=name, split="all", origin="imported")
    trace.meta["steps"] = trace.steps
    return save_npz(trace, path)


def _stamp(trace: Trace, name: str, split: str, origin: str) -> Trace:
    """Fill in the metadata every consumer relies on (name, split, sha256, origin, model shape)."""
    meta = trace.meta
    meta["name"], meta["split"], meta["sha256"], meta["origin"] = name, split, trace.sha256, origin
    resolve_model(trace)
    return trace


def trace_origin(trace: Trace) -> str:
    """bundled, imported or file (a trace loaded straight from a path)."""
    origin = str(trace.meta.get("origin", "file"))
    return origin if origin in DEFAULT_PARTIAL else "file"
