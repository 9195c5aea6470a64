"""Vectorised load simulation: what each slot, GPU and node carries under a placement.

A token for expert e is split evenly over e's replicas, so a slot's load is `load[e] / logcnt[e]`.
GPU g holds slots `g*R/G .. (g+1)*R/G - 1`; node n holds GPUs `n*G/N ..`. Everything is batched over
windows and layers in a handful of tensor ops, on whatever device the inputs live on.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Simulation:
    """Per-window figures; every tensor is `[windows]` unless noted."""

    balancedness_gpu: torch.Tensor
    balancedness_expert: torch.Tensor
    balancedness_node: torch.Tensor
    layer_time: torch.Tensor  # sum over layers of the hottest GPU's load: the MoE time model
    identity_time: torch.Tensor  # the same without EPLB: experts placed contiguously, no replicas
    gpu_load: torch.Tensor  # [windows, layers, gpus]
    mean_time: torch.Tensor  # sum over layers of the mean GPU load: the layer time of a perfect balance

    @property
    def speedup(self) -> float:
        """Time without EPLB over time with this placement, pooled over all windows."""
        return float(self.identity_time.sum() / self.layer_time.sum().clamp_min(1e-12))


def slot_loads(load: torch.Tensor, phy2log: torch.Tensor, logcnt: torch.Tensor) -> torch.Tensor:
    """`[W, L, R]` load on each slot: the expert's load shared evenly among its replicas."""
    per_replica = load / logcnt.to(load.dtype)
    return per_replica.gather(-1, phy2log)


def bin_sums(values: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Sum contiguous runs of the last axis into `num_bins` equal bins."""
    return values.unflatten(-1, (num_bins, values.size(-1) // num_bins)).sum(-1)


def balancedness(bins: torch.Tensor) -> torch.Tensor:
    """Per window: sum over layers of the mean bin load over sum over layers of the max bin load."""
    return _ratio(bins.mean(-1).sum(-1), bins.amax(-1).sum(-1))


def _ratio(mean: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
    return torch.where(peak > 0, mean / peak.clamp_min(1e-12), torch.ones_like(peak))


def identity_gpu_load(load: torch.Tensor, num_gpus: int) -> torch.Tensor:
    """GPU loads with experts dealt contiguously, one slot each (E need not divide by G)."""
    num_experts = load.size(-1)
    gpu_of_expert = torch.arange(num_experts, device=load.device) * num_gpus // num_experts
    out = torch.zeros(*load.shape[:-1], num_gpus, dtype=load.dtype, device=load.device)
    return out.index_add_(-1, gpu_of_expert, load)


def simulate(
    load: torch.Tensor, phy2log: torch.Tensor, logcnt: torch.Tensor, num_gpus: int, num_nodes: int,
    identity_time: torch.Tensor | None = None,
) -> Simulation:
    """Score placements `phy2log [W, L, R]`, `logcnt [W, L, E]` against loads `[W, L, E]`.

    `identity_time` may carry the no-EPLB layer time of these loads, which depends on nothing else (a task
    computes it once, not once per candidate)."""
    load = load.to(torch.float64)
    slots = slot_loads(load, phy2log, logcnt)
    gpus = bin_sums(slots, num_gpus)
    nodes = bin_sums(gpus, num_nodes)
    peak_gpu = gpus.amax(-1).sum(-1)
    mean_gpu = gpus.mean(-1).sum(-1)
    if identity_time is None:
        identity_time = identity_gpu_load(load, num_gpus).amax(-1).sum(-1)
    return Simulation(
        balancedness_gpu=_ratio(mean_gpu, peak_gpu),
        balancedness_expert=balancedness(slots),
        balancedness_node=balancedness(nodes),
        layer_time=peak_gpu,
        identity_time=identity_time,
        gpu_load=gpus,
        mean_time=mean_gpu,
    )
