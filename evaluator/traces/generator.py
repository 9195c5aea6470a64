"""Simulated MoE expert load: route a drifting mix of token traffic through per-layer routers.

Why simulate: a search overfits whatever traces score it, so the traces must behave like serving load
(a few globally hot experts, hotter and cooler layers, hot spots that persist for tens to hundreds of
steps but move when the traffic mix moves). Routing every token of every step is far too slow, so the
generator routes a finite pool of token *prototypes* and draws each step's tokens as counts over them:

  model (fixed by `model_seed`)                       traffic (fixed by `traffic_seed`)
  - per layer a router W_l [H, E] and a bias b_l [E]  - a domain mixture (chat, code, math, ...) that
    (globally hot experts; a per-layer scale makes     drifts and now and then jumps to a new regime
    some layers hotter than others)                  - sessions: concurrent streams of related
  - per domain a centre c_d [H] that drifts slowly,     requests, each a sparse mix of its domain's
    favourite experts and favourite groups: a bias     prototypes, with a weight and a lifetime
    a_l[d] [E]                                       - a background of many small requests that
  - per domain prototypes u_p [H]; a prototype's        follows the mixture
    hidden vector is c_d(t) + u_p                    - a varying batch: tokens per step
  - a prototype's experts in layer l: top-k of
    (c_d(t) + u_p) W_l + b_l + a_l[d], group-limited when the preset routes by groups (the best
    groups by their two best scores, then the top-k experts inside them); group biases are balanced
    on the reference mix, as load-balanced training would leave them

  counts[step, l, :] = multinomial(tokens_t, mix_t over prototypes) @ routing one-hots of layer l

Route samples: a few of each step's actual tokens (drawn from its prototype counts with a random stream
of their own, so the counts never change) keep their experts in every layer, for locality and
cross-layer statistics. Serving realism, off by default so the calibrated datasets keep their numbers:
prefill chunks (many tokens from few requests) between decode steps (many requests, one token each),
and runs of steps dominated by one long request. Routing is correlated across layers by construction: a
token keeps its hidden vector through every layer, so its experts in one layer predict the next.

Calibration against published serving statistics: datasets/CALIBRATION.md.

Determinism: all randomness comes from numpy generators seeded per purpose; router scores are exact
integer arithmetic (quantised vectors) with unique tie-breaks, and counts are sums of small integers.
No float rounding can flip a top-k, so the same preset, parameters and seeds give the same trace (same
content sha256) on any CPU thread count, and by construction on CUDA too (a test checks it where a GPU
is present).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from evaluator.traces.trace import Trace, TraceError

GENERATOR_VERSION = "1"

# Fixed-point scales: hidden vectors and router weights become integers, so every score is exact.
_QX = 64  # hidden-vector scale
_QW = 64  # router-weight scale

DOMAINS = ("chat", "code", "math", "reasoning", "translation", "writing", "retrieval", "tools")


@dataclass(frozen=True)
class ModelShape:
    """The routing shape of one MoE model (the numbers a balancer and its evaluator need)."""

    name: str
    layers: int
    experts: int
    top_k: int
    num_groups: int = 1  # expert groups for group-limited routing (1: plain top-k)
    topk_groups: int = 1  # groups each token may use
    tokens_per_step: int = 1024  # default mean batch; DeepSeek: 1024 routed per rank at EP32

    def as_meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layers": self.layers,
            "experts": self.experts,
            "top_k": self.top_k,
            "num_groups": self.num_groups,
            "topk_groups": self.topk_groups,
        }


PRESETS: dict[str, ModelShape] = {
    s.name: s
    for s in (
        # 4096 tokens x top-8 = 32768 routed tokens per layer per step: 1024 per rank on 32 ranks.
        ModelShape("deepseek-v3", 58, 256, 8, num_groups=8, topk_groups=4, tokens_per_step=4096),
        ModelShape("qwen3-30b-a3b", 48, 128, 8, tokens_per_step=2048),
        ModelShape("deepseek-v2-lite", 26, 64, 6, tokens_per_step=1024),
        ModelShape("mixtral-8x7b", 32, 8, 2, tokens_per_step=1024),
    )
}


@dataclass(frozen=True)
class TraceParams:
    """Knobs of the simulation. Defaults are the calibrated DeepSeek-V3 values (datasets/CALIBRATION.md)."""

    steps: int = 1200
    tokens_per_step: int = 0  # 0: the preset's default
    batch_sigma: float = 0.25  # log-std of the per-step batch size
    batch_corr: float = 0.9  # step-to-step correlation of the batch size (log scale)
    # model
    hidden_dim: int = 64
    prototypes_per_domain: int = 128
    bias_scale: float = 0.1  # std of the per-expert router bias, in units of score std
    hot_experts: float = 1.2  # mean number of extra-hot experts per layer
    hot_boost: float = 1.6  # mean extra bias of an extra-hot expert
    layer_skew_sigma: float = 0.35  # log-std of the per-layer bias scale: hot and cool layers
    domain_strength: float = 0.22  # how far domain centres sit from the origin (routing specialisation)
    domain_hot_experts: float = 1.5  # mean number of experts per layer that one domain strongly prefers
    domain_hot_boost: float = 2.4  # mean extra score a domain gives its preferred experts
    domain_group_sigma: float = 0.7  # std of a domain's preference for each expert group (group routing)
    group_balance: float = 0.95  # how evenly training balanced the expert groups (group-limited presets)
    # traffic
    domain_mix: tuple[float, ...] = (0.34, 0.2, 0.1, 0.1, 0.06, 0.1, 0.05, 0.05)
    mix_sigma: float = 1.6  # std of the drifting part of the domain logits
    mix_corr: float = 0.982  # step-to-step correlation of that drift
    regime_sigma: float = 1.0  # std of a regime's offset to the domain logits
    regime_steps: float = 600.0  # mean steps between regime shifts (0: never)
    shift_at: tuple[int, ...] = ()  # steps of forced regime shifts (regime-shift datasets)
    sessions: int = 45  # concurrent sessions
    session_steps: float = 180.0  # mean session lifetime in steps
    session_sigma: float = 0.5  # log-std of session weights (a few heavy sessions dominate)
    session_prototypes: int = 32  # prototypes a session draws from
    background: float = 0.4  # share of tokens from many small requests following the domain mix
    drift_sigma: float = 0.18  # per-epoch drift of the domain centres, relative to domain_strength
    drift_corr: float = 0.9  # epoch-to-epoch correlation of centre drift
    route_every: int = 50  # steps between re-routing the drifting prototypes
    # route samples (never change the counts)
    route_samples_per_step: int = 8  # tokens per step whose experts in every layer are recorded (0: none)
    # serving realism (0: off; the calibrated datasets leave them off)
    prefill_share: float = 0.0  # probability that a step carries a prefill chunk
    prefill_chunk: float = 2.0  # a chunk's tokens, as a multiple of the step's batch size
    prefill_requests: float = 4.0  # mean number of requests (prompts) a chunk comes from (at least 1)
    burst_prob: float = 0.0  # probability per step that one long request starts a run of steps
    burst_steps: float = 4.0  # mean length of that run in steps
    burst_share: float = 0.9  # the long request's share of each step of its run

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise TraceError(f"trace parameter 'steps' must be positive, got {self.steps}")
        if len(self.domain_mix) != len(DOMAINS) or min(self.domain_mix) <= 0:
            raise TraceError(f"trace parameter 'domain_mix' needs {len(DOMAINS)} positive weights "
                             f"({', '.join(DOMAINS)})")
        if not 0 <= self.background <= 1:
            raise TraceError(f"trace parameter 'background' must lie in [0, 1], got {self.background}")
        if self.route_every <= 0 or self.sessions <= 0 or self.session_prototypes <= 0:
            raise TraceError("trace parameters 'route_every', 'sessions' and 'session_prototypes' must be positive")
        if self.route_samples_per_step < 0:
            raise TraceError("trace parameter 'route_samples_per_step' must be >= 0, got "
                             f"{self.route_samples_per_step}")
        for name in ("prefill_share", "burst_prob"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise TraceError(f"trace parameter '{name}' must lie in [0, 1), got {value}")
        if not 0 < self.burst_share < 1:
            raise TraceError(f"trace parameter 'burst_share' must lie in (0, 1), got {self.burst_share}")
        if self.prefill_chunk <= 0 or self.prefill_requests < 1 or self.burst_steps < 1:
            raise TraceError("trace parameters need prefill_chunk > 0, prefill_requests >= 1 and burst_steps >= 1")
        if self.prefill_share * self.prefill_chunk >= 1:
            raise TraceError("prefill_share x prefill_chunk must stay below 1 (prefill takes that share of the "
                             f"tokens, decode the rest), got {self.prefill_share * self.prefill_chunk:.3g}")

    @property
    def serving(self) -> bool:
        """Whether prefill chunks or long-request bursts shape the batches (else: the calibrated traffic)."""
        return self.prefill_share > 0 or self.burst_prob > 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TraceParams":
        """Build from a manifest table; unknown keys are an error that lists the known ones."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise TraceError(f"unknown trace parameter '{key}'; known: {', '.join(known)}")
            values[key] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    def as_meta(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _rng(seed: int, purpose: str) -> np.random.Generator:
    """An independent stream per (seed, purpose): adding a purpose never shifts the others."""
    key = int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), key])))


def _quantise(values: np.ndarray, scale: int) -> np.ndarray:
    return np.rint(values * scale).astype(np.int64)


# ----------------------------------------------------------------------------------------------------
# The model: routers, biases, domains, prototypes
# ----------------------------------------------------------------------------------------------------
@dataclass
class RouterModel:
    """Everything fixed by the model seed. Integer tensors; scores are exact."""

    shape: ModelShape
    params: TraceParams
    weight: torch.Tensor  # [L, H, E] int64 (scaled by _QW)
    bias: torch.Tensor  # [L, E] int64 (score units)
    domain_bias: torch.Tensor  # [L, D, E] int64 (score units): experts each domain strongly prefers
    centre: np.ndarray  # [D, H] float64, domain centres at time 0
    proto_offset: np.ndarray  # [P, H] float64
    proto_domain: np.ndarray  # [P] domain of each prototype
    base_score: torch.Tensor = field(init=False)  # [L, P, E] int32: offset part of every score

    def __post_init__(self) -> None:
        # float64 BLAS is exact here (|products| << 2**53); int32 storage halves the largest array
        offsets = torch.from_numpy(_quantise(self.proto_offset, _QX)).double()
        self.base_score = torch.stack([(offsets @ w.double()).to(torch.int32) for w in self.weight])

    @property
    def num_prototypes(self) -> int:
        return int(self.proto_domain.shape[0])


def build_model(shape: ModelShape, params: TraceParams, model_seed: int) -> RouterModel:
    """Draw routers, per-expert biases (globally hot experts), per-layer skew, domains and prototypes."""
    rng = _rng(model_seed, f"model/{shape.name}")
    L, E, H = shape.layers, shape.experts, params.hidden_dim
    D, per = len(DOMAINS), params.prototypes_per_domain
    # unit-norm router columns (times sqrt(H)): no expert is favoured by the length of its gate vector,
    # so global hotness comes only from the bias and stays a controlled knob
    raw = rng.standard_normal((L, H, E))
    weight = _quantise(raw * (math.sqrt(H) / np.linalg.norm(raw, axis=1, keepdims=True)), _QW)
    score_unit = math.sqrt(H) * _QX * _QW  # std of an unbiased score
    layer_skew = np.exp(params.layer_skew_sigma * rng.standard_normal(L))  # hot and cool layers
    bias = (params.bias_scale * layer_skew)[:, None] * rng.standard_normal((L, E))
    num_hot = rng.poisson(params.hot_experts, size=L)
    for layer in range(L):
        hot = rng.choice(E, size=min(int(num_hot[layer]), E), replace=False)
        bias[layer, hot] += rng.exponential(params.hot_boost, size=hot.size) * layer_skew[layer]
    centre = params.domain_strength * rng.standard_normal((D, H))
    proto_offset = rng.standard_normal((D * per, H))
    proto_domain = np.repeat(np.arange(D), per)
    # a domain's signature experts: few per layer, strongly preferred (code tokens crowd a "code" expert)
    domain_bias = np.zeros((L, D, E))
    num_signature = rng.poisson(params.domain_hot_experts, size=(L, D))
    for layer in range(L):
        for d in range(D):
            picked = rng.choice(E, size=min(int(num_signature[layer, d]), E), replace=False)
            domain_bias[layer, d, picked] += rng.exponential(params.domain_hot_boost, size=picked.size)
    if shape.num_groups > 1:  # domains also prefer whole groups: the mix moves load between nodes
        group_pref = params.domain_group_sigma * rng.standard_normal((L, D, shape.num_groups))
        domain_bias += np.repeat(group_pref, E // shape.num_groups, axis=2)
    model = RouterModel(
        shape=shape,
        params=params,
        weight=torch.from_numpy(weight),
        bias=torch.from_numpy(np.rint(bias * score_unit).astype(np.int64)),
        domain_bias=torch.from_numpy(np.rint(domain_bias * score_unit).astype(np.int64)),
        centre=centre,
        proto_offset=proto_offset,
        proto_domain=proto_domain,
    )
    if shape.num_groups > 1 and params.group_balance > 0:
        balance_groups(model, params.group_balance, score_unit)
    return model


def balance_groups(model: RouterModel, strength: float, score_unit: float, rounds: int = 8) -> None:
    """Shift each group's bias so groups carry equal load on the reference (prior) traffic mix.

    Models with group-limited routing are trained with load balancing, so on the traffic they were
    trained for no group is much hotter than another; a hot expert is hot inside its group without
    dragging its whole group along. Imbalance between groups then comes from traffic that differs
    from the reference mix. `strength` in [0, 1] scales the correction.
    """
    shape, params = model.shape, model.params
    G, size = shape.num_groups, shape.experts // shape.num_groups
    D = len(DOMAINS)
    prior = np.asarray(params.domain_mix) / sum(params.domain_mix)
    # picks per (layer, domain, group) are integers, so the load below never depends on summation order
    cell = torch.from_numpy(model.proto_domain)[None, :, None] * G  # [1, P, 1]
    for _ in range(rounds):
        chosen = route(model, model.centre, torch.device("cpu"))  # [L, P, k]
        index = (cell + chosen // size).flatten(1)  # domain * G + group
        picks = torch.zeros(shape.layers, D * G, dtype=torch.int64).scatter_add_(1, index, torch.ones_like(index))
        load = (picks.view(shape.layers, D, G).numpy() * prior[None, :, None]).sum(axis=1)  # [L, G]
        ratio = np.maximum(load / load.mean(axis=-1, keepdims=True), 1e-3)
        step = -0.5 * strength * np.log(ratio)
        delta = np.rint(np.repeat(step, size, axis=1) * score_unit).astype(np.int64)
        model.bias += torch.from_numpy(delta)


def route(model: RouterModel, centre: np.ndarray, device: torch.device, chunk: int = 8) -> torch.Tensor:
    """Experts chosen by every prototype in every layer given the current domain centres: [L, P, k].

    Keys are `score * E + (E - 1 - e)`: unique integers, so top-k has no ties to break differently
    on different hardware. Layers go in chunks to bound memory.
    """
    shape = model.shape
    L, E = shape.layers, shape.experts
    c = torch.from_numpy(_quantise(centre, _QX)).double().to(device)
    domain = torch.from_numpy(model.proto_domain).to(device)
    tiebreak = torch.arange(E - 1, -1, -1, device=device, dtype=torch.int64)
    chosen = torch.empty(L, model.num_prototypes, shape.top_k, dtype=torch.int64, device=device)
    for lo in range(0, L, chunk):
        hi = min(L, lo + chunk)
        weight = model.weight[lo:hi].to(device).double()
        # domain part of the score plus the bias, per (layer, domain): exact small integers in float64
        shift = torch.einsum("dh,lhe->lde", c, weight).long() + model.domain_bias[lo:hi].to(device)
        shift += model.bias[lo:hi].to(device)[:, None, :]
        score = model.base_score[lo:hi].to(device).long() + shift[:, domain, :]
        chosen[lo:hi] = top_experts(score.mul_(E).add_(tiebreak), shape)
    return chosen


def top_experts(keys: torch.Tensor, shape: ModelShape) -> torch.Tensor:
    """Top-k expert indices of unique integer keys `[..., E]`.

    Group-limited routing (DeepSeek style): rank the groups by the sum of their two best keys, keep the
    best `topk_groups`, then take the top-k experts inside the kept groups.
    """
    E, k = shape.experts, shape.top_k
    G = shape.num_groups
    if G <= 1 or shape.topk_groups >= G:
        return keys.topk(k, dim=-1).indices
    size = E // G
    grouped = keys.unflatten(-1, (G, size))  # [..., G, size]
    group_key = grouped.topk(min(2, size), dim=-1).values.sum(-1) * G
    group_key += torch.arange(G - 1, -1, -1, device=keys.device, dtype=torch.int64)
    groups = group_key.topk(shape.topk_groups, dim=-1).indices  # [..., topk_groups]
    kept = grouped.gather(-2, groups[..., None].expand(*groups.shape, size)).flatten(-2)
    pos = kept.topk(k, dim=-1).indices  # position among the kept groups' experts
    return groups.gather(-1, pos // size) * size + pos % size


# ----------------------------------------------------------------------------------------------------
# The traffic: domain mixture, regimes, sessions, batch sizes
# ----------------------------------------------------------------------------------------------------
def _ou(rng: np.random.Generator, steps: int, dims: int, sigma: float, corr: float) -> np.ndarray:
    """Stationary AR(1) paths with marginal std `sigma`: [steps, dims]."""
    out = np.empty((steps, dims))
    noise = rng.standard_normal((steps, dims)) * sigma * math.sqrt(max(0.0, 1 - corr * corr))
    out[0] = rng.standard_normal(dims) * sigma
    for t in range(1, steps):
        out[t] = corr * out[t - 1] + noise[t]
    return out


def domain_mixture(params: TraceParams, rng: np.random.Generator) -> np.ndarray:
    """[steps, D] traffic share of each domain: prior + regime offset + slow drift."""
    S, D = params.steps, len(DOMAINS)
    prior = np.log(np.asarray(params.domain_mix) / sum(params.domain_mix))
    rate = 1.0 / params.regime_steps if params.regime_steps > 0 else 0.0
    shifts = rng.random(S) < rate
    shifts[0] = False
    for t in params.shift_at:
        if 0 < t < S:
            shifts[t] = True
    regime_id = np.cumsum(shifts)
    offsets = rng.standard_normal((int(regime_id[-1]) + 1, D)) * params.regime_sigma
    offsets[0] *= 0.5  # the opening regime stays near the prior mix
    logits = prior + offsets[regime_id] + _ou(rng, S, D, params.mix_sigma, params.mix_corr)
    mix = np.exp(logits - logits.max(axis=1, keepdims=True))
    return mix / mix.sum(axis=1, keepdims=True)


def batch_sizes(params: TraceParams, tokens: int, rng: np.random.Generator) -> np.ndarray:
    """[steps] tokens per step: a log-normal AR(1) around the mean."""
    log_m = _ou(rng, params.steps, 1, params.batch_sigma, params.batch_corr)[:, 0]
    return np.maximum(1, np.rint(tokens * np.exp(log_m - 0.5 * params.batch_sigma**2))).astype(np.int64)


def prototype_mix(params: TraceParams, model: RouterModel, mix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[steps, P] probability of each prototype per step: sessions plus a background following the mix."""
    S, D, per = params.steps, len(DOMAINS), params.prototypes_per_domain
    P = model.num_prototypes
    m = min(params.session_prototypes, per)
    end_p = 1.0 / max(params.session_steps, 1.0)
    topics: list[np.ndarray] = []  # (prototype ids, weights)
    weights: list[float] = []
    starts: list[int] = []
    ends: list[int] = []

    def open_session(t: int) -> None:
        d = int(rng.choice(D, p=mix[t]))
        ids = d * per + rng.choice(per, size=m, replace=False)
        topics.append((ids, rng.dirichlet(np.ones(m))))
        weights.append(float(np.exp(params.session_sigma * rng.standard_normal())))
        starts.append(t)
        life = int(rng.geometric(end_p))
        ends.append(min(S, t + life))

    for _ in range(params.sessions):
        open_session(0)
    active = list(range(params.sessions))
    for t in range(1, S):
        for j, s in enumerate(active):
            if ends[s] <= t:
                open_session(t)
                active[j] = len(starts) - 1
    n = len(starts)
    activity = np.zeros((S, n))
    topic = np.zeros((n, P))
    for s in range(n):
        activity[starts[s]: ends[s], s] = weights[s]
        ids, w = topics[s]
        topic[s, ids] = w
    sess = activity @ topic
    sess /= sess.sum(axis=1, keepdims=True)
    uniform = np.zeros((D, P))
    uniform[model.proto_domain, np.arange(P)] = 1.0 / per
    q = (1 - params.background) * sess + params.background * (mix @ uniform)
    return q / q.sum(axis=1, keepdims=True)


def centre_path(model: RouterModel, epochs: int, rng: np.random.Generator) -> np.ndarray:
    """[epochs, D, H] drifting domain centres (AR(1) around the model's centres)."""
    p = model.params
    D, H = model.centre.shape
    sigma = p.drift_sigma * max(p.domain_strength, 1e-9)
    drift = _ou(rng, epochs, D * H, sigma, p.drift_corr).reshape(epochs, D, H)
    drift -= drift[:1]  # epoch 0 routes with the model's own centres
    return model.centre[None] + drift


def _request_topic(model: RouterModel, mix_t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[P] token distribution of one request: a few prototypes of one domain drawn from the step's mix."""
    p, per = model.params, model.params.prototypes_per_domain
    m = min(p.session_prototypes, per)
    d = int(rng.choice(len(mix_t), p=mix_t))
    topic = np.zeros(model.num_prototypes)
    topic[d * per + rng.choice(per, size=m, replace=False)] = rng.dirichlet(np.ones(m))
    return topic


def serving_counts(
    params: TraceParams, model: RouterModel, mix: np.ndarray, q: np.ndarray, batch: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prototype counts of serving batches: `(counts [S, P], prefill [S] bool, top request share [S])`.

    Every step decodes one token for each of many requests (`batch * (1 - prefill_share * prefill_chunk)`
    tokens drawn from the traffic mix, so the mean batch stays the calibrated one). A prefill step adds a
    chunk of `prefill_chunk * batch` tokens from a few requests, each a handful of one domain's
    prototypes. A burst is one long request prefilled over a run of steps: in each it takes
    `burst_share` of the step, with the same prompt (topic) throughout, and no other chunk runs then.
    """
    S, P = params.steps, model.num_prototypes
    counts = np.zeros((S, P), dtype=np.int64)
    prefill = np.zeros(S, dtype=bool)
    top_share = np.zeros(S)
    decode = np.maximum(1, np.rint(batch * (1 - params.prefill_share * params.prefill_chunk))).astype(np.int64)
    burst_left, burst_topic = 0, np.zeros(P)
    for t in range(S):
        counts[t] = rng.multinomial(decode[t], q[t])
        largest = 1
        if burst_left == 0 and params.burst_prob > 0 and rng.random() < params.burst_prob:
            burst_left, burst_topic = int(rng.geometric(1 / params.burst_steps)), _request_topic(model, mix[t], rng)
        if burst_left > 0:
            burst_left -= 1
            size = int(round(decode[t] * params.burst_share / (1 - params.burst_share)))
            counts[t] += rng.multinomial(size, burst_topic)
            prefill[t], largest = True, max(1, size)
        elif params.prefill_share > 0 and rng.random() < params.prefill_share:
            chunk = max(1, int(round(batch[t] * params.prefill_chunk)))
            n_req = 1 + int(rng.poisson(params.prefill_requests - 1))
            sizes = rng.multinomial(chunk, rng.dirichlet(np.ones(n_req)))
            for size in sizes:
                counts[t] += rng.multinomial(int(size), _request_topic(model, mix[t], rng))
            prefill[t], largest = True, max(1, int(sizes.max()))
        top_share[t] = largest / counts[t].sum()
    return counts, prefill, top_share


def sample_tokens(proto_counts: np.ndarray, per_step: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`(prototype ids, steps)` of up to `per_step` distinct tokens of every step, drawn from its actual tokens."""
    ids: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    for t, row in enumerate(proto_counts):
        total = int(row.sum())
        n = min(per_step, total)
        if n == 0:
            continue
        picks = np.sort(rng.choice(total, size=n, replace=False))  # token positions within the step
        ids.append(np.searchsorted(np.cumsum(row), picks, side="right"))
        steps.append(np.full(n, t, dtype=np.int64))
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(ids), np.concatenate(steps)


# ----------------------------------------------------------------------------------------------------
# Putting it together
# ----------------------------------------------------------------------------------------------------
def get_preset(name: str) -> ModelShape:
    if name not in PRESETS:
        raise TraceError(f"unknown model preset '{name}'; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def generate(
    preset: str | ModelShape,
    params: TraceParams | None = None,
    model_seed: int = 0,
    traffic_seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> Trace:
    """Simulate a trace `[steps, layers, experts]` of routed-token counts. Deterministic in its inputs."""
    shape = get_preset(preset) if isinstance(preset, str) else preset
    params = params or TraceParams()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TraceError("trace generation was asked to run on cuda but torch sees no CUDA device; use --device cpu")
    dev = torch.device(device)
    tokens = params.tokens_per_step or shape.tokens_per_step
    model = build_model(shape, params, model_seed)
    rng = _rng(traffic_seed, f"traffic/{shape.name}")
    mix = domain_mixture(params, rng)
    batch = batch_sizes(params, tokens, rng)
    q = prototype_mix(params, model, mix, rng)
    serving_meta: dict[str, Any] = {}
    if params.serving:  # a stream of its own: the calibrated traffic above is drawn exactly as before
        proto_counts, prefill, top_share = serving_counts(params, model, mix, q, batch,
                                                          _rng(traffic_seed, f"serving/{shape.name}"))
        serving_meta = {"step_prefill": prefill.astype(int).tolist(),
                        "step_top_request_share": np.round(top_share, 4).tolist()}
    else:
        proto_counts = rng.multinomial(batch, q)  # [S, P] int64
    epochs = -(-params.steps // params.route_every)
    centres = centre_path(model, epochs, _rng(traffic_seed, f"drift/{shape.name}"))
    sample_ids, route_steps = sample_tokens(proto_counts, params.route_samples_per_step,
                                            _rng(traffic_seed, f"routes/{shape.name}"))

    S, L, E = params.steps, shape.layers, shape.experts
    counts = np.empty((S, L, E), dtype=np.int64)
    routes = np.empty((sample_ids.size, L, shape.top_k), dtype=np.int16)
    bar = tqdm(total=S, desc=f"generating {shape.name}", unit="step", disable=not progress, leave=False)
    for epoch in range(epochs):
        lo, hi = epoch * params.route_every, min(S, (epoch + 1) * params.route_every)
        experts = route(model, centres[epoch], dev)  # [L, P, k], best first
        here = (route_steps >= lo) & (route_steps < hi)
        if here.any():
            picked = torch.from_numpy(sample_ids[here]).to(dev)
            routes[here] = experts[:, picked, :].permute(1, 0, 2).cpu().numpy()
        c = torch.from_numpy(proto_counts[lo:hi]).to(dev)  # [T, P]
        src = c.repeat_interleave(shape.top_k, dim=1)  # [T, P*k]: each prototype's tokens, once per expert
        out = torch.zeros(hi - lo, L, E, dtype=torch.int64, device=dev)
        for layer in range(L):
            out[:, layer].index_add_(1, experts[layer].reshape(-1), src)  # integer sums: exact in any order
        counts[lo:hi] = out.cpu().numpy()
        bar.update(hi - lo)
    bar.close()
    meta = {
        "source": "tracegen",
        "generator_version": GENERATOR_VERSION,
        "preset": shape.name,
        "model": shape.as_meta(),
        "num_groups": shape.num_groups,
        "top_k": shape.top_k,
        "model_seed": int(model_seed),
        "traffic_seed": int(traffic_seed),
        "params": params.as_meta(),
        "tokens_per_step": int(tokens),
        **serving_meta,
    }
    if sample_ids.size == 0:
        return Trace(counts, meta)
    return Trace(counts, meta, routes, route_steps)


def with_overrides(params: TraceParams, **changes: Any) -> TraceParams:
    """A copy of `params` with some fields changed (tuples accepted as lists)."""
    return replace(params, **{k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()})
