"""Shared fixtures.

- `small_trace`: a small deterministic simulated trace (300 steps x 4 layers x 16 experts, top-2,
  4 groups with top-2 group routing), generated once per session and copied for each test, so a test
  may change it freely.
- `tiny_shape` / `small_params`: the shape and parameters behind it, for tests that generate variants.
- `user_cache`: an empty trace cache for the test (sets `EPLB_EVOLVE_CACHE`), so imports and cache
  experiments never touch the machine's real cache.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from evaluator.traces import Trace, generator

TINY_SHAPE = generator.ModelShape("tiny", layers=4, experts=16, top_k=2, num_groups=4, topk_groups=2,
                                  tokens_per_step=256)
SMALL_PARAMS = generator.TraceParams(steps=300, prototypes_per_domain=16, hidden_dim=16, sessions=8,
                                     session_prototypes=4)


@pytest.fixture(scope="session")
def tiny_shape() -> generator.ModelShape:
    return TINY_SHAPE


@pytest.fixture(scope="session")
def small_params() -> generator.TraceParams:
    return SMALL_PARAMS


@pytest.fixture(scope="session")
def _small_trace_once() -> Trace:
    trace = generator.generate(TINY_SHAPE, SMALL_PARAMS, model_seed=1, traffic_seed=2, progress=False)
    trace.meta.update(name="small", split="search")
    return trace


@pytest.fixture
def small_trace(_small_trace_once: Trace) -> Trace:
    """300 x 4 x 16 deterministic trace; a fresh copy per test."""
    return Trace(_small_trace_once.counts.copy(), copy.deepcopy(_small_trace_once.meta))


@pytest.fixture
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, private trace cache for one test."""
    cache = tmp_path / "trace-cache"
    monkeypatch.setenv("EPLB_EVOLVE_CACHE", str(cache))
    return cache
