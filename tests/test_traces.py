"""Named datasets: manifests, the cache, checksums, user datasets, pinned statistics, and the CLI."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluator import traces
from evaluator.traces import Trace, TraceError, load_trace, registry
from evaluator.traces import cli as traces_cli
from evaluator.traces import formats as trace_formats
from evaluator.traces.stats import PUBLISHED, StatsConfig, compute_stats

BUNDLED = ("deepseek-v3", "deepseek-v3-shift", "qwen3-30b-a3b", "deepseek-v2-lite")

# Calibration statistics of the bundled datasets' search splits, measured (see datasets/CALIBRATION.md).
PINNED_STATS: dict[str, dict[str, float]] = {
    "deepseek-v3": {
        "rank_imbalance_no_eplb": 1.572377,
        "slot_imbalance_no_eplb": 10.996547,
        "rank_imbalance_seed": 0.195838,
        "slot_imbalance_seed": 1.849962,
        "rank_imbalance_no_eplb_step": 1.65395,
        "slot_imbalance_no_eplb_step": 11.326509,
        "rank_imbalance_seed_step": 0.348835,
        "slot_imbalance_seed_step": 2.27149,
        "top10_overlap": 0.710031,
        "load_repeat": 0.878367,
        "balancedness_gpu_predictive": 0.716402,
        "balancedness_expert_predictive": 0.287781,
        "gini": 0.409798,
    },
    "deepseek-v3-shift": {
        "rank_imbalance_no_eplb": 1.825184,
        "slot_imbalance_no_eplb": 12.208415,
        "rank_imbalance_seed": 0.229726,
        "slot_imbalance_seed": 2.080856,
        "rank_imbalance_no_eplb_step": 1.867605,
        "slot_imbalance_no_eplb_step": 12.426676,
        "rank_imbalance_seed_step": 0.348841,
        "slot_imbalance_seed_step": 2.397224,
        "top10_overlap": 0.638088,
        "load_repeat": 0.845617,
        "balancedness_gpu_predictive": 0.665549,
        "balancedness_expert_predictive": 0.25153,
        "gini": 0.44092,
    },
    "qwen3-30b-a3b": {
        "rank_imbalance_no_eplb": 0.839715,
        "slot_imbalance_no_eplb": 6.901916,
        "rank_imbalance_seed": 0.008449,
        "slot_imbalance_seed": 0.801112,
        "rank_imbalance_no_eplb_step": 0.855816,
        "slot_imbalance_no_eplb_step": 7.03269,
        "rank_imbalance_seed_step": 0.087878,
        "slot_imbalance_seed_step": 1.082775,
        "top10_overlap": 0.789015,
        "load_repeat": 0.918241,
        "balancedness_gpu_predictive": 0.888316,
        "balancedness_expert_predictive": 0.427838,
        "gini": 0.299828,
    },
    "deepseek-v2-lite": {
        "rank_imbalance_no_eplb": 0.622026,
        "slot_imbalance_no_eplb": 5.038162,
        "rank_imbalance_seed": 0.007319,
        "slot_imbalance_seed": 0.868235,
        "rank_imbalance_no_eplb_step": 0.635967,
        "slot_imbalance_no_eplb_step": 5.144495,
        "rank_imbalance_seed_step": 0.078034,
        "slot_imbalance_seed_step": 1.115437,
        "top10_overlap": 0.824615,
        "load_repeat": 0.934861,
        "balancedness_gpu_predictive": 0.91239,
        "balancedness_expert_predictive": 0.454743,
        "gini": 0.302232,
    },
}

# How far the default dataset may sit from each published figure (datasets/CALIBRATION.md defends these).
CALIBRATION_FACTORS = {
    "rank_imbalance_no_eplb": 1.25,
    "slot_imbalance_no_eplb": 1.25,
    "balancedness_gpu_predictive": 1.25,
    "balancedness_expert_predictive": 1.25,
    "load_repeat": 1.25,
    "rank_imbalance_seed": 2.0,
}


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="eplb-evolve")
    traces_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


# ----------------------------------------------------------------------------------------------------
# Bundled datasets (generated once per machine into the real cache; the checksums make that safe)
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def bundled() -> dict[str, Trace]:
    return {name: load_trace(name, progress=False) for name in BUNDLED}


GENERALISATION_SPLITS = ("holdout-model", "holdout-long")


def test_bundled_datasets_are_listed_with_every_split() -> None:
    listed = {d.name: d for d in traces.list_datasets()}
    manifests = traces.manifests()
    for name in BUNDLED:
        assert listed[name].kind == "bundled"
        assert ({"search", "holdout", "holdout-model"} <= set(listed[name].splits)
                <= {"search", "holdout", *GENERALISATION_SPLITS, "serving"})
        m = manifests[name]
        # holdout-model comes from another router model of the same shape; the others share the search model
        assert m.split_model_seed("holdout-model") != m.model_seed
        assert m.split_model_seed("holdout") == m.split_model_seed("search") == m.model_seed
        if "holdout-long" in m.splits:
            assert m.split_model_seed("holdout-long") == m.model_seed
            assert int(m.split_params("holdout-long")["steps"]) == 2 * int(m.params["steps"])
    assert "holdout-long" in manifests["deepseek-v3"].splits
    assert traces.DEFAULT_DATASET == "deepseek-v3"


def test_traces_list_shows_the_generalisation_splits(capsys: pytest.CaptureFixture) -> None:
    assert run_cli("traces", "list") == 0
    out = capsys.readouterr().out
    assert "holdout-model" in out and "other router (model_seed" in out and "holdout-long" in out


# Splits no other test needs are slow to generate on a fresh machine: `make test-slow` checks them.
ALL_SPLITS = [
    pytest.param(name, split,
                 marks=[pytest.mark.slow]
                 if (name, split) in {("deepseek-v3-shift", "holdout"), ("qwen3-30b-a3b", "holdout")}
                 or split in GENERALISATION_SPLITS or split == "serving" else [])
    for name in BUNDLED
    for split in traces.manifests()[name].splits
]


@pytest.mark.parametrize("name, split", ALL_SPLITS)
def test_every_split_matches_its_pinned_checksum(bundled: dict[str, Trace], name: str, split: str) -> None:
    manifest = traces.manifests()[name]
    pinned = manifest.splits[split]["sha256"]
    assert pinned, f"{manifest.path.name} pins no checksum for '{split}'"
    trace = bundled[name] if split == "search" else load_trace(f"{name}:{split}", progress=False)
    assert trace.sha256 == pinned == trace.meta["sha256"]
    assert trace.meta["name"] == name and trace.meta["split"] == split


def test_manifests_are_the_bundled_datasets() -> None:
    assert set(traces.manifests()) == set(BUNDLED)


def test_search_and_holdout_differ_but_share_the_model() -> None:
    search = load_trace("deepseek-v2-lite", progress=False)
    holdout = load_trace("deepseek-v2-lite:holdout", progress=False)
    assert search.sha256 != holdout.sha256
    assert search.meta["model_seed"] == holdout.meta["model_seed"]
    assert search.meta["traffic_seed"] != holdout.meta["traffic_seed"]
    assert load_trace("deepseek-v2-lite", "holdout", progress=False).sha256 == holdout.sha256


def test_default_dataset_metadata(bundled: dict[str, Trace]) -> None:
    trace = bundled["deepseek-v3"]
    assert trace.counts.shape == (1200, 58, 256)
    assert trace.meta["model"] == {
        "name": "deepseek-v3", "layers": 58, "experts": 256, "top_k": 8, "num_groups": 8, "topk_groups": 4,
    }
    assert trace.meta["num_groups"] == 8 and trace.meta["top_k"] == 8
    # the real scale: about 1024 routed tokens per rank per step on 32 ranks
    per_rank = trace.counts.sum(-1).mean() / 32
    assert 900 < per_rank < 1150


@pytest.mark.parametrize("name", BUNDLED)
def test_pinned_statistics(bundled: dict[str, Trace], name: str) -> None:
    stats = compute_stats(bundled[name]).as_dict()
    for key, value in PINNED_STATS[name].items():
        assert stats[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("split", ["search", "holdout"])
def test_default_dataset_is_within_the_stated_factors_of_published_figures(
        bundled: dict[str, Trace], split: str) -> None:
    trace = bundled["deepseek-v3"] if split == "search" else load_trace("deepseek-v3:holdout", progress=False)
    stats = compute_stats(trace, StatsConfig()).as_dict()
    assert set(CALIBRATION_FACTORS) == set(PUBLISHED)
    for key, published in PUBLISHED.items():
        factor, ratio = CALIBRATION_FACTORS[key], stats[key] / published
        assert 1 / factor <= ratio <= factor, f"{key}: {stats[key]:.3f} vs published {published} (factor {factor})"


def test_regime_shift_dataset_is_harder_to_predict(bundled: dict[str, Trace]) -> None:
    calm = compute_stats(bundled["deepseek-v3"]).balancedness_gpu_predictive
    shifted = compute_stats(bundled["deepseek-v3-shift"]).balancedness_gpu_predictive
    assert shifted < calm


# ----------------------------------------------------------------------------------------------------
# Manifests, cache and checksums, on a small private dataset
# ----------------------------------------------------------------------------------------------------
SMALL_MANIFEST = """
name = "tiny-mixtral"
description = "test dataset"
preset = "mixtral-8x7b"
generator_version = "{version}"
model_seed = 3

[params]
steps = 40
prototypes_per_domain = 8
sessions = 4

[splits.search]
traffic_seed = 1
sha256 = "{search}"

[splits.holdout]
traffic_seed = 2
sha256 = "{holdout}"
"""


@pytest.fixture
def private_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_cache: Path) -> Path:
    folder = tmp_path / "datasets"
    folder.mkdir()
    monkeypatch.setattr(registry, "DATASETS_DIR", folder)
    return folder


def write_manifest(folder: Path, **fields: str) -> traces.Manifest:
    from evaluator.traces.generator import GENERATOR_VERSION

    values = {"version": GENERATOR_VERSION, "search": "", "holdout": ""} | fields
    path = folder / "tiny-mixtral.toml"
    path.write_text(SMALL_MANIFEST.format(**values))
    return traces.read_manifest(path)


def pinned_manifest(folder: Path) -> traces.Manifest:
    draft = write_manifest(folder)
    shas = {s: traces.generate_split(draft, s, progress=False).sha256 for s in ("search", "holdout")}
    return write_manifest(folder, **shas)


def test_generate_check_and_cache(private_datasets: Path, user_cache: Path) -> None:
    manifest = pinned_manifest(private_datasets)
    trace = load_trace("tiny-mixtral", progress=False)
    assert trace.sha256 == manifest.splits["search"]["sha256"]
    assert manifest.cache_path("search").exists() and manifest.cache_path("search").is_relative_to(user_cache)
    again = load_trace("tiny-mixtral:search", progress=False)  # from the cache now
    assert again.sha256 == trace.sha256 and np.array_equal(again.counts, trace.counts)


def test_wrong_pinned_checksum_is_an_error(private_datasets: Path) -> None:
    write_manifest(private_datasets, search="0" * 64, holdout="1" * 64)
    with pytest.raises(TraceError, match="checksum mismatch: generated 'tiny-mixtral:search' has sha256") as exc:
        load_trace("tiny-mixtral", progress=False)
    assert "\n" not in str(exc.value)
    assert not list(traces.cache_dir().glob("tiny-mixtral-*"))


def test_corrupted_cache_file_is_an_error(private_datasets: Path, small_trace: Trace) -> None:
    manifest = pinned_manifest(private_datasets)
    traces.save_npz(small_trace, manifest.cache_path("search"))  # self-consistent, but the wrong numbers
    with pytest.raises(TraceError, match="checksum mismatch: content sha256 .* but dataset 'tiny-mixtral:search' pins"):
        load_trace("tiny-mixtral", progress=False)


def test_tampered_cache_file_is_an_error(private_datasets: Path) -> None:
    manifest = pinned_manifest(private_datasets)
    trace = load_trace("tiny-mixtral", progress=False)
    path = manifest.cache_path("search")
    counts = trace.counts.copy()
    counts[0, 0, 0] += 1
    meta = dict(trace.meta)
    np.savez_compressed(path, counts=counts, meta=np.array(json.dumps(meta)))
    with pytest.raises(TraceError, match="does not match the recorded"):
        load_trace("tiny-mixtral", progress=False)


def test_generator_version_mismatch(private_datasets: Path) -> None:
    write_manifest(private_datasets, version="0-old")
    with pytest.raises(TraceError, match="made by generator version 0-old"):
        load_trace("tiny-mixtral", progress=False)


def test_a_split_may_name_its_own_router_model_and_length(private_datasets: Path) -> None:
    from evaluator.traces.similarity import hot_overlap, share_correlation

    path = write_manifest(private_datasets).path
    path.write_text(path.read_text() + "\n[splits.other]\ntraffic_seed = 3\nmodel_seed = 9\nsteps = 60\n")
    manifest = traces.read_manifest(path)
    search = traces.generate_split(manifest, "search", progress=False)
    holdout = traces.generate_split(manifest, "holdout", progress=False)
    other = traces.generate_split(manifest, "other", progress=False)
    assert other.meta["model_seed"] == 9 and search.meta["model_seed"] == holdout.meta["model_seed"] == 3
    assert other.steps == 60 and search.steps == 40
    # same router, new traffic: similar hot experts; another router: not
    assert share_correlation(search, holdout) > share_correlation(search, other) + 0.2
    assert hot_overlap(search, search) == 1.0


@pytest.mark.parametrize("bad", ["model_seed = -1", "steps = 0", "model_seed = 'x'"])
def test_bad_split_overrides_are_one_line_errors(private_datasets: Path, bad: str) -> None:
    path = write_manifest(private_datasets).path
    path.write_text(path.read_text() + f"\n[splits.other]\ntraffic_seed = 3\n{bad}\n")
    with pytest.raises(TraceError, match="split 'other'") as exc:
        traces.read_manifest(path)
    assert "\n" not in str(exc.value)


def test_unpinned_split_warns_and_works(private_datasets: Path, capsys: pytest.CaptureFixture) -> None:
    write_manifest(private_datasets)
    trace = load_trace("tiny-mixtral:holdout", progress=False)
    assert trace.sha256 in capsys.readouterr().err


def test_unknown_names_and_splits(private_datasets: Path) -> None:
    pinned_manifest(private_datasets)
    with pytest.raises(TraceError, match="unknown dataset 'nope'; known: tiny-mixtral"):
        load_trace("nope")
    with pytest.raises(TraceError, match="has no split 'train'; splits: search, holdout"):
        load_trace("tiny-mixtral:train")
    with pytest.raises(TraceError, match="names split 'search' but split 'holdout'"):
        load_trace("tiny-mixtral:search", "holdout")


def test_unknown_name_lists_the_bundled_datasets() -> None:
    with pytest.raises(TraceError) as exc:
        load_trace("deepseek-v4")
    assert "unknown dataset 'deepseek-v4'; known: " in str(exc.value)
    for name in BUNDLED:
        assert name in str(exc.value)


def test_bad_manifest(private_datasets: Path) -> None:
    (private_datasets / "broken.toml").write_text("name = 'x'\npreset = \n")
    with pytest.raises(TraceError, match="broken.toml: invalid TOML"):
        traces.manifests()
    (private_datasets / "broken.toml").write_text("name = 'x'\npreset = 'mixtral-8x7b'\n")
    with pytest.raises(TraceError, match="broken.toml: manifest lacks generator_version, model_seed, splits"):
        traces.manifests()


# ----------------------------------------------------------------------------------------------------
# User datasets (imported traces)
# ----------------------------------------------------------------------------------------------------
def test_imported_dataset_is_found_by_name(small_trace: Trace, user_cache: Path) -> None:
    traces.save_user_dataset(small_trace, "my-trace")
    whole = load_trace("my-trace")
    assert whole.sha256 == small_trace.sha256 and whole.meta["split"] == "all"
    assert whole.meta["model"]["experts"] == 16
    search, holdout = load_trace("my-trace:search"), load_trace("my-trace", "holdout")
    assert search.steps + holdout.steps == small_trace.steps and search.steps % 100 == 0
    assert np.array_equal(np.concatenate([search.counts, holdout.counts]), small_trace.counts)
    assert search.meta["sha256"] == search.sha256 != whole.sha256
    assert "my-trace" in [d.name for d in traces.list_datasets() if d.kind == "imported"]
    with pytest.raises(TraceError, match="already exists"):
        traces.save_user_dataset(small_trace, "my-trace")
    traces.save_user_dataset(small_trace.slice_steps(0, 100), "my-trace", force=True)
    assert load_trace("my-trace").steps == 100
    with pytest.raises(TraceError, match="is a bundled dataset"):
        traces.save_user_dataset(small_trace, "deepseek-v3")
    with pytest.raises(TraceError, match="must be letters"):
        traces.save_user_dataset(small_trace, "../escape")


def test_imported_deepseek_shape_gets_its_routing_shape(user_cache: Path) -> None:
    trace = Trace(np.ones((3, 58, 256), dtype=np.int64))
    traces.save_user_dataset(trace, "real")
    loaded = load_trace("real")
    model = loaded.meta["model"]
    assert (model["top_k"], model["num_groups"]) == (8, 8)
    assert "published configuration for 58x256" in loaded.meta["groups_from"]


def test_import_groups_come_from_the_user_then_the_file_then_the_published_shape(
        user_cache: Path, tmp_path: Path) -> None:
    counts = np.ones((3, 4, 16), dtype=np.int64)
    # an SGLang dump states no groups: 4x16 is ambiguous, so the import asks
    torch.save({"logical_count": torch.from_numpy(counts)}, tmp_path / "dump.pt")
    with pytest.raises(TraceError, match="the sglang format records no expert groups .* pass --groups N"):
        traces.save_user_dataset(trace_formats.read_trace(tmp_path / "dump.pt"), "dump")
    traces.save_user_dataset(trace_formats.read_trace(tmp_path / "dump.pt"), "dump", groups=2)
    assert load_trace("dump").meta["model"]["num_groups"] == 2 and load_trace("dump").meta["groups_from"] == "--groups"
    with pytest.raises(TraceError, match="3 expert groups do not divide 16 experts"):
        traces.save_user_dataset(Trace(counts), "bad", groups=3)
    # our own .npz states its groups, and --groups overrides them
    stated = Trace(counts, {"model": {"num_groups": 4, "top_k": 2}})
    traces.save_user_dataset(stated, "stated")
    assert (load_trace("stated").meta["model"]["num_groups"], load_trace("stated").meta["model"]["top_k"]) == (4, 2)
    traces.save_user_dataset(Trace(counts, {"model": {"num_groups": 4}}), "stated", force=True, groups=1)
    assert load_trace("stated").meta["model"]["num_groups"] == 1
    # a file read straight from its path keeps "unknown" rather than guessing (an evaluation then asks)
    path = trace_formats.write_adrs_json(Trace(counts), tmp_path / "expert-load.json")
    assert load_trace(str(path)).meta["model"]["num_groups"] is None
    with pytest.raises(TraceError, match="scored whole: it has no split 'search'"):
        load_trace(str(path), "search")


def test_windows_keep_or_drop_a_trailing_partial_window() -> None:
    counts = np.arange(250 * 2 * 3, dtype=np.int64).reshape(250, 2, 3)
    trace = Trace(counts)
    dropped, kept = trace.windows(100), trace.windows(100, partial=True)
    assert dropped.shape == (2, 2, 3) and kept.shape == (3, 2, 3)
    assert torch.equal(kept[:2], dropped)
    assert kept[2].tolist() == counts[200:].sum(axis=0).tolist()
    assert trace.windows(50, partial=True).shape[0] == 5  # no remainder: nothing extra
    assert Trace(counts[:40]).windows(100, partial=True).shape[0] == 1
    with pytest.raises(TraceError, match="fewer than one window"):
        Trace(counts[:40]).windows(100)


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------
def test_cli_import_list_stats_export(small_trace: Trace, tmp_path: Path, user_cache: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    source = trace_formats.write_adrs_json(small_trace, tmp_path / "expert-load.json")
    # the ADRS schema stores no expert groups, and 4x16 is not the published 58x256 shape: ask, never guess
    with pytest.raises(TraceError, match="records no expert groups .* pass --groups N"):
        run_cli("traces", "import", str(source), "--format", "adrs-json", "--name", "mine")
    assert run_cli("traces", "import", str(source), "--format", "adrs-json", "--name", "mine", "--groups", "4") == 0
    assert "shape 4x16 g4 k? (groups from --groups)" in capsys.readouterr().out
    assert run_cli("traces", "list") == 0
    listing = capsys.readouterr().out
    assert "mine" in listing and "deepseek-v3" in listing
    mine = next(line for line in listing.splitlines() if line.startswith("mine "))
    assert (mine.split()[1:6] == ["imported", "-", "4x16", "g4", "k?"] and "all,search,holdout" in mine
            and " score " in mine)
    assert load_trace("mine").meta["model"]["num_groups"] == 4
    assert run_cli("traces", "stats", "mine", "--replicas", "24", "--groups", "4", "--nodes", "2", "--gpus", "4") == 0
    table = capsys.readouterr().out
    assert "seed predictive balancedness_gpu" in table and "R=24" in table
    out = tmp_path / "exported.json"
    assert run_cli("traces", "export", "mine", str(out), "--format", "adrs-json") == 0
    assert trace_formats.read_adrs_json(out).sha256 == small_trace.sha256
    assert run_cli("traces", "stats", "mine", "--json", "--replicas", "24", "--groups", "4", "--nodes", "2",
                   "--gpus", "4") == 0
    assert math.isfinite(json.loads(capsys.readouterr().out)["stats"]["balancedness_gpu_predictive"])


def test_cli_generate(private_datasets: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = pinned_manifest(private_datasets)
    assert run_cli("traces", "generate", "tiny-mixtral") == 0
    out = capsys.readouterr().out
    for split in ("search", "holdout"):
        assert manifest.splits[split]["sha256"] in out
    with pytest.raises(TraceError, match="unknown bundled dataset"):
        run_cli("traces", "generate", "nope")


def test_cli_is_registered() -> None:
    from evolve import plugins

    assert "evaluator.traces.cli" in plugins.command_modules()  # through the EPLB plugin (evaluator/plugin.py)


# ----------------------------------------------------------------------------------------------------
# Route samples: validation, storage, slicing, the cache, and the statistics built on them
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def routed() -> Trace:
    from evaluator.traces import generator

    shape = generator.ModelShape("routed-tiny", layers=4, experts=16, top_k=2, num_groups=4, topk_groups=2,
                                 tokens_per_step=256)
    params = generator.TraceParams(steps=120, prototypes_per_domain=16, hidden_dim=16, sessions=8,
                                   session_prototypes=4, route_every=40)
    return generator.generate(shape, params, model_seed=1, traffic_seed=2, progress=False)


def test_routes_round_trip_through_npz(routed: Trace, tmp_path: Path) -> None:
    path = traces.save_npz(routed, tmp_path / "r.npz")
    back = traces.load_npz(path)
    assert back.sha256 == routed.sha256 and back.routes_sha256 == routed.routes_sha256
    assert back.routes.dtype == np.int16 and np.array_equal(back.routes, routed.routes)
    assert np.array_equal(back.route_steps, routed.route_steps)
    assert back.meta["routes_sha256"] == routed.routes_sha256
    assert routed.routes_sha256 != routed.sha256  # the counts' checksum stays the counts' alone


def test_slicing_keeps_the_routes_of_the_kept_steps(routed: Trace, tmp_path: Path) -> None:
    part = routed.slice_steps(30, 70)
    keep = (routed.route_steps >= 30) & (routed.route_steps < 70)
    assert np.array_equal(part.routes, routed.routes[keep])
    assert np.array_equal(part.route_steps, routed.route_steps[keep] - 30)
    assert part.route_steps.min() == 0 and part.route_steps.max() == 39
    tail = routed.slice_steps(100)
    assert tail.steps == 20 and tail.route_steps.max() == 19
    assert tail.routes.shape[0] == int((routed.route_steps >= 100).sum())
    again = traces.load_npz(traces.save_npz(part, tmp_path / "part.npz"))  # a slice saves and loads as itself
    assert again.routes_sha256 == part.routes_sha256 != routed.routes_sha256


def _malformed(routed: Trace, case: str) -> dict[str, np.ndarray]:
    routes, steps = routed.routes.copy(), routed.route_steps.copy()
    if case == "id out of range":
        routes[5, 1, 0] = 16
    elif case == "negative id":
        routes[5, 1, 0] = -1
    elif case == "repeated expert":
        routes[7, 2, 1] = routes[7, 2, 0]
    elif case == "steps decrease":
        steps[10], steps[11] = steps[11] + 1, steps[10]
    elif case == "step out of range":
        steps[-1] = routed.steps
    elif case == "wrong layers":
        routes = routes[:, :3]
    elif case == "fractional ids":
        routes = routes.astype(np.float64) + 0.5
    elif case == "steps missing":
        return {"counts": routed.counts, "routes": routes}
    elif case == "steps length":
        steps = steps[:-1]
    return {"counts": routed.counts, "routes": routes, "route_steps": steps}


@pytest.mark.parametrize("case, message", [
    ("id out of range", "expert id 16 of sampled token 5, layer 1 is outside [0, 16)"),
    ("negative id", "expert id -1 of sampled token 5, layer 1"),
    ("repeated expert", "sampled token 7, layer 2 names expert"),
    ("steps decrease", "route_steps must not decrease"),
    ("step out of range", "outside [0, 120)"),
    ("wrong layers", "routes must be [samples, 4 layers, k experts]"),
    ("fractional ids", "routes must be whole numbers"),
    ("steps missing", "need both 'routes' and 'route_steps'"),
    ("steps length", "one step per sampled token"),
])
def test_malformed_routes_in_a_file_are_one_line(routed: Trace, tmp_path: Path, case: str, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez_compressed(path, **_malformed(routed, case))
    with pytest.raises(TraceError) as exc:
        trace_formats.read_trace(path)
    text = str(exc.value)
    assert "\n" not in text and text.startswith(str(path)) and message in text


def test_routes_that_do_not_match_their_checksum_are_refused(routed: Trace, tmp_path: Path) -> None:
    path = traces.save_npz(routed, tmp_path / "r.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["routes"] = arrays["routes"][:, :, ::-1].copy()  # still valid routes, but not the recorded ones
    np.savez_compressed(path, **arrays)
    with pytest.raises(TraceError, match="route samples do not match their recorded checksum"):
        traces.load_npz(path)


def test_a_cache_entry_without_routes_is_regenerated(private_datasets: Path) -> None:
    manifest = pinned_manifest(private_datasets)
    path = manifest.cache_path("search")
    assert registry.CACHE_FORMAT in path.name
    fresh = traces.generate_split(manifest, "search", progress=False)
    traces.save_npz(Trace(fresh.counts, dict(fresh.meta)), path)  # as an older checkout cached it: counts only
    assert traces.load_npz(path).routes is None
    trace = load_trace("tiny-mixtral", progress=False)
    assert trace.routes is not None and trace.routes_sha256 == fresh.routes_sha256
    assert traces.load_npz(path).routes_sha256 == fresh.routes_sha256  # the upgraded file replaced it


def test_cross_layer_affinity_on_a_hand_made_route_array() -> None:
    from evaluator.traces.stats import cross_layer_top1

    top1 = np.array([[0, 2, 5], [0, 2, 6], [1, 3, 5], [1, 2, 7]])  # [tokens, layers]
    routes = np.stack([top1, 15 - top1], axis=-1)  # the second expert never matters
    # layers 0->1: expert 0 -> {2, 2} (2 of 2), expert 1 -> {3, 2} (1 of 2): 3/4
    # layers 1->2: expert 2 -> {5, 6, 7} (1 of 3), expert 3 -> {5} (1 of 1): 2/4
    assert cross_layer_top1(routes) == pytest.approx((0.75 + 0.5) / 2)
    same = np.stack([np.tile(np.arange(4)[:, None], (1, 3)), np.full((4, 3), 9)], axis=-1)
    assert cross_layer_top1(same) == 1.0
    rng = np.random.default_rng(0)
    independent = rng.integers(0, 16, size=(20000, 3, 1))
    measured, chance = cross_layer_top1(independent), cross_layer_top1(independent, shuffle_seed=0)
    assert measured == pytest.approx(chance, abs=0.01) and measured < 0.1
    assert math.isnan(cross_layer_top1(np.zeros((0, 3, 2), dtype=np.int16)))


def test_bimodality_and_prefill_share_from_batch_sizes() -> None:
    from evaluator.traces.stats import BIMODAL_THRESHOLD, bimodality_coefficient, prefill_token_share

    rng = np.random.default_rng(1)
    assert bimodality_coefficient(rng.uniform(size=20000)) == pytest.approx(5 / 9, abs=0.01)
    assert bimodality_coefficient(rng.normal(size=20000)) == pytest.approx(1 / 3, abs=0.01)
    decode = rng.normal(1000, 50, size=600)
    steps = np.concatenate([decode, decode[:400] + 9000])  # 400 steps also carry a 9,000-token chunk
    assert bimodality_coefficient(steps) > BIMODAL_THRESHOLD
    assert prefill_token_share(steps) == pytest.approx(400 * 9000 / steps.sum(), rel=0.02)
    assert prefill_token_share(decode) == 0.0


def test_stats_say_unavailable_without_route_samples(small_trace: Trace, user_cache: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    from evaluator.traces.stats import format_serving, serving_stats

    stripped = Trace(small_trace.counts, {"top_k": 2})
    text = format_serving(serving_stats(stripped))
    for label in ("cross-layer top-1 affinity", "steps where one request has > half", "largest request's share"):
        line = next(row for row in text.splitlines() if row.startswith(label))
        assert "unavailable" in line
    assert "no route samples in this trace" in text
    traces.save_user_dataset(stripped, "plain", groups=4)
    assert run_cli("traces", "stats", "plain", "--replicas", "24", "--groups", "4", "--nodes", "2", "--gpus", "4") == 0
    out = capsys.readouterr().out
    assert "serving realism" in out and "unavailable" in out
    assert run_cli("traces", "stats", "plain", "--json", "--replicas", "24", "--groups", "4", "--nodes", "2",
                   "--gpus", "4") == 0
    serving = json.loads(capsys.readouterr().out)["serving"]
    assert serving["cross_layer_top1"] is None and serving["route_samples"] == 0
    assert serving["batch_bimodality"] < 5 / 9


def test_bundled_serving_split_is_listed_and_shaped_like_serving(capsys: pytest.CaptureFixture) -> None:
    manifest = traces.manifests()["deepseek-v3"]
    params = manifest.split_params("serving")
    assert params["prefill_share"] > 0 and params["burst_prob"] > 0 and params["steps"] == 1200
    assert manifest.split_model_seed("serving") == manifest.model_seed
    assert manifest.splits["serving"]["sha256"]
    assert run_cli("traces", "list") == 0
    listing = capsys.readouterr().out
    assert "deepseek-v3:serving" in listing and "prefill_share 0.45" in listing


def test_default_dataset_carries_route_samples_with_cross_layer_affinity(bundled: dict[str, Trace]) -> None:
    from evaluator.traces.stats import BIMODAL_THRESHOLD, SERVING_FIGURES, serving_stats

    trace = bundled["deepseek-v3"]
    assert trace.routes.shape == (1200 * 8, 58, 8) and trace.route_steps[-1] == 1199
    stats = serving_stats(trace)
    assert stats.batch_bimodality < BIMODAL_THRESHOLD and stats.prefill_token_share == 0.0
    assert stats.cross_layer_top1 > stats.cross_layer_top1_chance + 0.2
    assert 1 / 1.25 <= stats.cross_layer_lift / SERVING_FIGURES["cross_layer_lift"] <= 1.25
    assert stats.dominated_step_share is None  # the calibrated traffic records no requests


@pytest.mark.slow
def test_serving_split_is_measured_as_serving() -> None:
    from evaluator.traces.stats import BIMODAL_THRESHOLD, SERVING_FIGURES, serving_stats

    trace = load_trace("deepseek-v3:serving", progress=False)
    stats = serving_stats(trace)
    assert stats.batch_bimodality > BIMODAL_THRESHOLD
    assert 1 / 1.25 <= stats.prefill_token_share / SERVING_FIGURES["prefill_token_share"] <= 1.25
    assert 1 / 1.25 <= stats.cross_layer_lift / SERVING_FIGURES["cross_layer_lift"] <= 1.25
    # stated 0.15; the flat split of a chunk among prompts gives about twice that (datasets/CALIBRATION.md)
    stated = SERVING_FIGURES["dominated_step_share"]
    assert stated < stats.dominated_step_share < 3 * stated
    assert stats.as_dict() == pytest.approx(PINNED_SERVING, rel=1e-4)
    search = compute_stats(load_trace("deepseek-v3", progress=False))
    assert compute_stats(trace).balancedness_gpu_predictive < search.balancedness_gpu_predictive - 0.1


PINNED_SERVING = {
    "batch_bimodality": 0.696566,
    "prefill_token_share": 0.910527,
    "prefill_step_share": 0.505,
    "top_request_share_median": 0.2365,
    "dominated_step_share": 0.3075,
    "route_samples": 9600,
    "cross_layer_top1": 0.4942,
    "cross_layer_top1_chance": 0.24443,
    "cross_layer_lift": 0.330571,
}
