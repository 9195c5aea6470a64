"""Global baseline with no Python loop over layers: greedy replication, then snake dealing onto GPUs.

Replication: repeatedly giving one more replica to the expert with the highest load per replica picks,
over the whole run, the R - E largest values of w_e / c for c = 1, 2, ... (each sequence is decreasing),
so one top-k over those candidate values gives the same counts in a single vectorised step.
Packing: sort all slots by load, heaviest first, and deal them onto GPUs in snake order
(0, 1, ..., G-1, G-1, ..., 1, 0, 0, 1, ...), so each GPU receives one slot per round of G.
Expert groups and nodes are ignored (a global policy).
"""
from __future__ import annotations

import torch


# EVOLVE-BLOCK-START replication
def replica_counts(weight: torch.Tensor, num_replicas: int) -> torch.Tensor:
    """Replica count per expert minimising the largest load per replica: [L, E] int64."""
    num_layers, num_experts = weight.shape
    extra = num_replicas - num_experts
    counts = torch.ones(num_layers, num_experts, dtype=torch.int64)
    if extra == 0:
        return counts
    divisors = torch.arange(1, extra + 1, dtype=weight.dtype)  # the c-th extra replica is chosen at priority w / c
    gains = (weight.unsqueeze(-1) / divisors).flatten(1)  # [L, E * extra], expert-major
    chosen = gains.topk(extra, dim=-1).indices // extra
    return counts.scatter_add_(1, chosen, torch.ones_like(chosen))
# EVOLVE-BLOCK-END


# EVOLVE-BLOCK-START packing
def snake_slots(weight: torch.Tensor, counts: torch.Tensor, num_gpus: int) -> torch.Tensor:
    """Experts per physical slot [L, R]: slots sorted by load and dealt in snake order."""
    num_layers, num_experts = weight.shape
    num_slots = int(counts[0].sum())
    per_gpu = num_slots // num_gpus
    # one entry per replica: expert id, repeated counts[e] times in each layer
    expert_of_replica = torch.repeat_interleave(
        torch.arange(num_experts).expand(num_layers, -1).flatten(), counts.flatten()
    ).view(num_layers, num_slots)
    replica_load = (weight / counts).gather(-1, expert_of_replica)
    order = replica_load.argsort(dim=-1, descending=True, stable=True)
    position = torch.arange(num_slots)
    round_, lane = position // num_gpus, position % num_gpus
    gpu = torch.where(round_ % 2 == 0, lane, num_gpus - 1 - lane)
    slot = gpu * per_gpu + round_  # the k-th heaviest replica lands here
    phy2log = torch.empty(num_layers, num_slots, dtype=torch.int64)
    phy2log.scatter_(1, slot.expand(num_layers, -1), expert_of_replica.gather(-1, order))
    return phy2log
# EVOLVE-BLOCK-END


def build_log2phy(phy2log: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Slots of each expert in slot order, padded with -1: [L, E, max replicas]."""
    num_layers, num_slots = phy2log.shape
    order = torch.sort(phy2log, dim=-1, stable=True).indices
    experts = phy2log.gather(-1, order)
    first = torch.cumsum(counts, dim=-1) - counts
    replica = torch.arange(num_slots).expand(num_layers, -1) - first.gather(-1, experts)
    log2phy = torch.full((num_layers, counts.size(1), int(counts.max())), -1, dtype=torch.int64)
    rows = torch.arange(num_layers).unsqueeze(-1).expand(-1, num_slots)
    log2phy[rows, experts, replica] = order
    return log2phy


def rebalance_experts(
    weight: torch.Tensor, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    weight = weight.double().cpu()
    if num_replicas % num_gpus or num_replicas < weight.size(1):
        raise ValueError(f"unsupported shape: R={num_replicas}, G={num_gpus}, E={weight.size(1)}")
    counts = replica_counts(weight, num_replicas)
    phy2log = snake_slots(weight, counts, num_gpus)
    return phy2log, build_log2phy(phy2log, counts), counts
