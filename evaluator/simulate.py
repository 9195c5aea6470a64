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
    mean = bins.mean(-1).sum(-1)
    peak = bins.amax(-1).sum(-1)
    return torch.where(peak > 0, mean / peak.clamp_min(1e-12), torch.ones_like(peak))


def identity_gpu_load(load: torch.Tensor, num_gpus: int) -> torch.Tensor:
    """GPU loads with experts dealt contiguously, one slot each (E need not divide by G)."""
    num_experts = load.size(-1)
    gpu_of_expert = torch.arange(num_experts, device=load.device) * num_gpus // num_experts
    out = torch.zeros(*load.shape[:-1], num_gpus, dtype=load.dtype, device=load.device)
    return out.index_add_(-1, gpu_of_expert, load)


def simulate(
    load: torch.Tensor, phy2log: torch.Tensor, logcnt: torch.Tensor, num_gpus: int, num_nodes: int
) -> Simulation:
    """Score placements `phy2log [W, L, R]`, `logcnt [W, L, E]` against loads `[W, L, E]`."""
    load = load.to(torch.float64)
    slots = slot_loads(load, phy2log, logcnt)
    gpus = bin_sums(slots, num_gpus)
    nodes = bin_sums(gpus, num_nodes)
    return Simulation(
        balancedness_gpu=balancedness(gpus),
        balancedness_expert=balancedness(slots),
        balancedness_node=balancedness(nodes),
        layer_time=gpus.amax(-1).sum(-1),
        identity_time=identity_gpu_load(load, num_gpus).amax(-1).sum(-1),
        gpu_load=gpus,
    )
