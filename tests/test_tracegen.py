"""The trace generator: shapes, routing rules, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluator.traces import Trace, TraceError, generator

QUICK = generator.TraceParams(steps=30, prototypes_per_domain=16, sessions=6, route_every=10)


@pytest.mark.parametrize("name", sorted(generator.PRESETS))
def test_preset_shapes_and_token_conservation(name: str) -> None:
    shape = generator.PRESETS[name]
    trace = generator.generate(name, QUICK, model_seed=3, traffic_seed=4, progress=False)
    assert trace.counts.shape == (QUICK.steps, shape.layers, shape.experts)
    assert trace.counts.dtype == np.int64 and trace.counts.min() >= 0
    per_layer = trace.counts.sum(-1)  # every token picks exactly top_k experts in every layer
    assert (per_layer == per_layer[:, :1]).all()
    assert (per_layer % shape.top_k == 0).all()
    tokens = per_layer[:, 0] // shape.top_k
    assert abs(tokens.mean() / shape.tokens_per_step - 1) < 0.35
    assert tokens.std() > 0  # the batch varies
    model = trace.meta["model"]
    assert (model["layers"], model["experts"], model["top_k"], model["num_groups"]) == (
        shape.layers, shape.experts, shape.top_k, shape.num_groups,
    )


def test_published_model_shapes() -> None:
    p = generator.PRESETS
    assert (p["deepseek-v3"].layers, p["deepseek-v3"].experts, p["deepseek-v3"].top_k) == (58, 256, 8)
    assert (p["deepseek-v3"].num_groups, p["deepseek-v3"].topk_groups) == (8, 4)
    assert (p["qwen3-30b-a3b"].layers, p["qwen3-30b-a3b"].experts, p["qwen3-30b-a3b"].top_k) == (48, 128, 8)
    assert (p["deepseek-v2-lite"].layers, p["deepseek-v2-lite"].experts, p["deepseek-v2-lite"].top_k) == (26, 64, 6)
    assert (p["mixtral-8x7b"].layers, p["mixtral-8x7b"].experts, p["mixtral-8x7b"].top_k) == (32, 8, 2)
    # DeepSeek's scale: 4096 tokens x top-8 is 1024 routed tokens per rank on 32 ranks
    assert p["deepseek-v3"].tokens_per_step * 8 / 32 == 1024


def test_group_limited_routing_matches_a_brute_force_reference() -> None:
    shape = generator.PRESETS["deepseek-v3"]
    gen = torch.Generator().manual_seed(0)
    keys = torch.randperm(50 * 256, generator=gen).view(50, 256)
    got = generator.top_experts(keys, shape)
    for row, chosen in zip(keys, got):
        groups = row.view(8, 32)
        group_score = groups.topk(2).values.sum(-1)
        kept = set(group_score.topk(4).indices.tolist())
        allowed = torch.tensor([e // 32 in kept for e in range(256)])
        expected = row.masked_fill(~allowed, -1).topk(8).indices
        assert sorted(chosen.tolist()) == sorted(expected.tolist())
        assert len({e // 32 for e in chosen.tolist()}) <= 4


def test_route_gives_distinct_experts_inside_the_allowed_groups() -> None:
    shape = generator.PRESETS["deepseek-v3"]
    params = generator.TraceParams(prototypes_per_domain=8)
    model = generator.build_model(shape, params, model_seed=5)
    chosen = generator.route(model, model.centre, torch.device("cpu"))
    assert chosen.shape == (58, model.num_prototypes, 8)
    assert (chosen.sort(-1).values.diff(dim=-1) > 0).all()  # distinct
    groups_used = torch.stack([(chosen // 32 == g).any(-1) for g in range(8)], dim=-1).sum(-1)
    assert int(groups_used.max()) <= 4


def test_hot_experts_and_hot_layers_exist() -> None:
    trace = generator.generate("deepseek-v3", generator.TraceParams(steps=100), model_seed=11, traffic_seed=1,
                               progress=False)
    load = trace.counts.sum(0).astype(float)  # [L, E]
    peak = load.max(-1) / load.mean(-1)
    assert peak.max() > 8  # some expert is many times the mean
    assert peak.max() / peak.min() > 2  # some layers are much hotter than others


def test_same_seed_same_sha_and_different_seeds_differ(tiny_shape, small_params) -> None:
    TINY_SHAPE, SMALL_PARAMS = tiny_shape, small_params
    a = generator.generate(TINY_SHAPE, SMALL_PARAMS, model_seed=1, traffic_seed=2, progress=False)
    b = generator.generate(TINY_SHAPE, SMALL_PARAMS, model_seed=1, traffic_seed=2, progress=False)
    assert a.sha256 == b.sha256
    assert generator.generate(TINY_SHAPE, SMALL_PARAMS, model_seed=1, traffic_seed=3, progress=False).sha256 != a.sha256
    assert generator.generate(TINY_SHAPE, SMALL_PARAMS, model_seed=2, traffic_seed=2, progress=False).sha256 != a.sha256
    changed = generator.with_overrides(SMALL_PARAMS, bias_scale=SMALL_PARAMS.bias_scale * 2)
    assert generator.generate(TINY_SHAPE, changed, model_seed=1, traffic_seed=2, progress=False).sha256 != a.sha256


def test_small_trace_fixture_is_pinned(small_trace: Trace) -> None:
    """Other tests rely on the fixture being the same numbers everywhere."""
    assert small_trace.counts.shape == (300, 4, 16)
    assert small_trace.sha256 == FIXTURE_SHA


FIXTURE_SHA = "d6cf6eeef5338b252cb40a2c9e0ef65764bd605c81083e878a0d459acd6df488"


def test_determinism_across_thread_counts() -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = generator.generate("deepseek-v3", QUICK, model_seed=7, traffic_seed=8, progress=False).sha256
        torch.set_num_threads(max(2, threads))
        many = generator.generate("deepseek-v3", QUICK, model_seed=7, traffic_seed=8, progress=False).sha256
    finally:
        torch.set_num_threads(threads)
    assert one == many


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_trace() -> None:
    cpu = generator.generate("deepseek-v3", QUICK, model_seed=7, traffic_seed=8, progress=False)
    gpu = generator.generate("deepseek-v3", QUICK, model_seed=7, traffic_seed=8, device="cuda", progress=False)
    assert gpu.sha256 == cpu.sha256


def test_cuda_request_without_a_device_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tiny_shape,
                                                        small_params) -> None:
    TINY_SHAPE, SMALL_PARAMS = tiny_shape, small_params
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TraceError, match="no CUDA device"):
        generator.generate(TINY_SHAPE, SMALL_PARAMS, device="cuda", progress=False)


def test_regime_shift_moves_the_mix() -> None:
    params = generator.TraceParams(steps=400, regime_steps=0, shift_at=(200,), regime_sigma=2.0, mix_sigma=0.01)
    mix = generator.domain_mixture(params, generator._rng(0, "t"))
    before, after = mix[150:199].mean(0), mix[201:250].mean(0)
    assert np.abs(before - after).sum() > 0.3
    assert np.abs(mix[10:59].mean(0) - before).sum() < 0.1


def test_parameters_from_a_manifest_table() -> None:
    params = generator.TraceParams.from_dict({"steps": 50, "shift_at": [10, 20]})
    assert params.steps == 50 and params.shift_at == (10, 20)
    with pytest.raises(TraceError, match="unknown trace parameter 'stepz'; known: steps"):
        generator.TraceParams.from_dict({"stepz": 5})
    with pytest.raises(TraceError, match="domain_mix"):
        generator.TraceParams(domain_mix=(1.0, 2.0))
    with pytest.raises(TraceError, match="unknown model preset 'gpt-moe'"):
        generator.generate("gpt-moe", progress=False)


# ----------------------------------------------------------------------------------------------------
# Route samples and serving realism
# ----------------------------------------------------------------------------------------------------
def test_route_samples_are_real_tokens_of_their_step_and_deterministic(tiny_shape, small_params) -> None:
    a = generator.generate(tiny_shape, small_params, model_seed=1, traffic_seed=2, progress=False)
    b = generator.generate(tiny_shape, small_params, model_seed=1, traffic_seed=2, progress=False)
    per_step = small_params.route_samples_per_step
    assert a.routes is not None and a.route_steps is not None
    assert a.routes.shape == (small_params.steps * per_step, tiny_shape.layers, tiny_shape.top_k)
    assert a.routes.dtype == np.int16 and a.route_steps.dtype == np.int64
    assert np.array_equal(np.bincount(a.route_steps, minlength=a.steps), np.full(a.steps, per_step))
    assert (a.sha256, a.routes_sha256) == (b.sha256, b.routes_sha256)
    assert np.array_equal(a.routes, b.routes)
    other = generator.generate(tiny_shape, small_params, model_seed=1, traffic_seed=3, progress=False)
    assert other.routes_sha256 != a.routes_sha256
    # every sampled token's expert in every layer received load in that step
    steps = np.broadcast_to(a.route_steps[:, None, None], a.routes.shape)
    layers = np.broadcast_to(np.arange(tiny_shape.layers)[None, :, None], a.routes.shape)
    assert (a.counts[steps, layers, a.routes] > 0).all()
    assert (np.sort(a.routes, axis=-1)[..., 1:] != np.sort(a.routes, axis=-1)[..., :-1]).all()


def test_route_samples_leave_the_counts_alone(tiny_shape, small_params) -> None:
    with_routes = generator.generate(tiny_shape, small_params, model_seed=1, traffic_seed=2, progress=False)
    none = generator.generate(tiny_shape, generator.with_overrides(small_params, route_samples_per_step=0),
                              model_seed=1, traffic_seed=2, progress=False)
    more = generator.generate(tiny_shape, generator.with_overrides(small_params, route_samples_per_step=32),
                              model_seed=1, traffic_seed=2, progress=False)
    assert none.routes is None and none.route_steps is None and none.routes_sha256 is None
    assert with_routes.sha256 == none.sha256 == more.sha256 == FIXTURE_SHA
    assert more.routes.shape[0] == 32 * small_params.steps


def test_route_samples_follow_the_steps_prototype_counts() -> None:
    counts = np.zeros((3, 5), dtype=np.int64)
    counts[0, 2] = 10  # step 0: every token is prototype 2
    counts[1, [0, 4]] = [1, 1]  # step 1: two tokens, fewer than asked for
    counts[2, [1, 3]] = [1000, 1]
    ids, steps = generator.sample_tokens(counts, 4, generator._rng(0, "t"))
    assert steps.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert ids[:4].tolist() == [2, 2, 2, 2] and sorted(ids[4:6].tolist()) == [0, 4]
    assert set(ids[6:].tolist()) <= {1, 3}


SERVING_SHAPE = generator.ModelShape("serving-tiny", layers=4, experts=16, top_k=2, num_groups=4, topk_groups=2,
                                     tokens_per_step=512)
SERVING_BASE = generator.TraceParams(steps=400, prototypes_per_domain=16, hidden_dim=16, sessions=8,
                                     session_prototypes=4, route_every=100)


def _serving(**knobs) -> Trace:
    return generator.generate(SERVING_SHAPE, generator.with_overrides(SERVING_BASE, **knobs), model_seed=1,
                              traffic_seed=2, progress=False)


def test_phases_make_the_batch_size_bimodal_and_keep_the_mean() -> None:
    from evaluator.traces.stats import BIMODAL_THRESHOLD, serving_stats, tokens_per_step

    plain, phased = _serving(), _serving(prefill_share=0.4, prefill_chunk=2.0, prefill_requests=1.0)
    before, after = serving_stats(plain), serving_stats(phased)
    assert before.batch_bimodality < BIMODAL_THRESHOLD < after.batch_bimodality
    assert before.prefill_token_share == 0.0 and before.prefill_step_share is None
    assert after.prefill_token_share == pytest.approx(0.8, abs=0.08)  # prefill_share x prefill_chunk
    assert after.prefill_step_share == pytest.approx(0.4, abs=0.07)
    tokens = tokens_per_step(phased)
    prefill = np.asarray(phased.meta["step_prefill"], dtype=bool)
    assert tokens[prefill].min() > tokens[~prefill].max()  # chunks: many tokens; decode: few
    assert np.median(tokens[prefill]) > 5 * np.median(tokens[~prefill])
    assert tokens.mean() == pytest.approx(tokens_per_step(plain).mean(), rel=0.1)
    # decode steps are many one-token requests; here a chunk is one prompt: 2 / 2.2 of its step
    share = np.asarray(phased.meta["step_top_request_share"])
    assert share[~prefill].max() < 0.05 and np.median(share[prefill]) == pytest.approx(2 / 2.2, abs=0.03)


def test_bursts_raise_the_largest_request_share() -> None:
    from evaluator.traces.stats import serving_stats

    calm = _serving(prefill_share=0.1, prefill_chunk=1.0)
    bursty = _serving(prefill_share=0.1, prefill_chunk=1.0, burst_prob=0.1, burst_steps=4, burst_share=0.9)
    calm_s, bursty_s = serving_stats(calm), serving_stats(bursty)
    assert bursty_s.dominated_step_share > calm_s.dominated_step_share + 0.05
    share = np.asarray(bursty.meta["step_top_request_share"])
    dominated = share > 0.85
    assert dominated.sum() >= 10
    # a burst is a run: a dominated step is usually followed by another one
    assert (dominated[:-1] & dominated[1:]).sum() > dominated.sum() / 3


def test_serving_knobs_are_deterministic_and_off_by_default(small_params) -> None:
    knobs = dict(prefill_share=0.3, burst_prob=0.05)
    a, b = _serving(**knobs), _serving(**knobs)
    assert (a.sha256, a.routes_sha256, a.meta["step_top_request_share"]) == (
        b.sha256, b.routes_sha256, b.meta["step_top_request_share"])
    assert a.sha256 != _serving().sha256
    assert not small_params.serving and "step_prefill" not in _serving().meta


@pytest.mark.parametrize("knobs, message", [
    (dict(prefill_share=1.2), "'prefill_share' must lie in"),
    (dict(burst_share=1.0), "'burst_share' must lie in"),
    (dict(prefill_share=0.6, prefill_chunk=2.0), "prefill_share x prefill_chunk must stay below 1"),
    (dict(prefill_requests=0.5), "prefill_requests >= 1"),
    (dict(route_samples_per_step=-1), "'route_samples_per_step' must be >= 0"),
])
def test_bad_serving_knobs_are_one_line_errors(knobs: dict, message: str) -> None:
    with pytest.raises(TraceError, match=message) as exc:
        generator.TraceParams(**knobs)
    assert "\n" not in str(exc.value)
