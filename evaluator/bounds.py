"""Lower bounds on the hottest GPU, slot and node of a layer, and the balancedness ceilings they imply.

No placement of R slots on G GPUs can beat, per layer,
  * total / G (the GPUs share the load), and
  * T*, the smallest achievable maximum load per replica: every GPU holding the hottest slot carries at
    least that slot. T* comes from the min-max divisor rule (give each next replica to the expert with
    the highest load per replica), which is exactly optimal for it; the rule's picks are the R - E largest
    of the values w / 1, w / 2, ... over experts, so T* is the (R - E + 1)-th largest of them.
Balancedness is sum over layers of the mean bin load over sum over layers of the max bin load, so with
the max replaced by a lower bound it becomes an upper bound: no balancer can score above it on those
windows, not even one that sees the window it is scored on.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def optimal_peak_per_replica(load: torch.Tensor, num_replicas: int, chunk: int = 64) -> torch.Tensor:
    """T*: the least possible maximum load per replica with `num_replicas` slots, for loads `[..., E]`."""
    num_experts = load.size(-1)
    extra = num_replicas - num_experts
    if extra < 0:
        raise ValueError(f"num_replicas ({num_replicas}) is below the number of experts ({num_experts})")
    flat = load.reshape(-1, num_experts).to(torch.float64)
    if extra == 0:
        return flat.amax(-1).view(load.shape[:-1])
    # Only the extra + 1 heaviest experts can hold one of the extra + 1 largest values, and no expert needs
    # more than extra + 1 divisors.
    width = min(num_experts, extra + 1)
    divisors = torch.arange(1, extra + 2, dtype=torch.float64)
    out = []
    for start in range(0, flat.size(0), chunk):  # rows are independent; chunks bound the memory
        heaviest = flat[start : start + chunk].topk(width, dim=-1).values
        values = (heaviest.unsqueeze(-1) / divisors).flatten(1)
        out.append(values.topk(extra + 1, dim=-1).values[:, -1])
    return torch.cat(out).view(load.shape[:-1])


@dataclass
class Ceilings:
    """Per scoring window, the largest balancedness any placement can reach: `[windows]` tensors."""

    balancedness_gpu: torch.Tensor
    balancedness_expert: torch.Tensor
    balancedness_node: torch.Tensor
    peak_per_replica: torch.Tensor  # T* per window and layer: [windows, layers]


def _ceiling(total: torch.Tensor, bins: int, peak: torch.Tensor) -> torch.Tensor:
    mean = (total / bins).sum(-1)
    bound = torch.maximum(total / bins, peak).sum(-1)
    return torch.where(bound > 0, mean / bound.clamp_min(1e-300), torch.ones_like(bound))


def balancedness_ceilings(windows: torch.Tensor, num_replicas: int, num_gpus: int, num_nodes: int) -> Ceilings:
    """Upper bounds on GPU, slot and node balancedness for loads `windows [W, L, E]`."""
    windows = windows.to(torch.float64)
    total = windows.sum(-1)  # [W, L]
    peak = optimal_peak_per_replica(windows, num_replicas)
    return Ceilings(
        balancedness_gpu=_ceiling(total, num_gpus, peak),
        balancedness_expert=_ceiling(total, num_replicas, peak),
        balancedness_node=_ceiling(total, num_nodes, peak),
        peak_per_replica=peak,
    )
