"""Hybrid divisor-method replication with an adaptively chosen Sainte-Lague tail, then snake packing.

Replication hands out the R - E redundant slots in two phases:
  * the bulk follows the min-max rule: the next replica goes to the expert whose load per replica,
    w / c, is highest (on its own this minimises the hottest replica);
  * the last `tail` slots follow the Sainte-Lague rule over redundant replicas, priority w / (c - 1/2),
    which leans towards experts that still have a single replica and so evens out slot sizes.
How long the tail should be depends on how skewed a layer is, so a few tail lengths (always including 0,
the pure min-max rule) are planned side by side as extra rows, each dealt onto GPUs in snake order, and
every layer keeps the tail whose packing leaves the lightest hottest GPU on the planning window.
Packing sorts the slots by load and deals them onto GPUs in snake order (0..G-1, G-1..0, ...).
Everything is batched over layers; there is no Python loop at all. Groups and nodes are ignored.
"""
from __future__ import annotations

import math

import torch

TAIL_FRACTIONS = (0.0, 0.05, 0.1, 0.2)  # tail lengths tried, as fractions of the redundant slots


# EVOLVE-BLOCK-START replication
def tail_lengths(extra: int) -> list[int]:
    """Distinct tail lengths to try for `extra` redundant slots, shortest first (0 always included)."""
    return sorted({min(extra, math.ceil(f * extra)) for f in TAIL_FRACTIONS})


def minmax_order(weight: torch.Tensor, extra: int) -> torch.Tensor:
    """Experts receiving the redundant slots, in the order the min-max rule hands them out: [L, extra].

    Giving one replica at a time to the highest w / c takes, over the whole run, the `extra` largest values
    of w / 1, w / 2, ... across experts (each expert's sequence falls), so one sorted top-k gives the order.
    Two facts keep that top-k small: only the `extra` heaviest experts can receive a pick (a lighter one
    is beaten by all of them at every step), and every picked value is at least the mean load per slot,
    so no expert receives more than w_max * R / total extra replicas.
    """
    num_layers, num_experts = weight.shape
    top_weight, top_expert = weight.topk(min(extra, num_experts), dim=-1)
    total = weight.sum(-1).clamp_min(1e-12)
    bound = int((top_weight[:, 0] * (num_experts + extra) / total).max())
    depth = min(extra, max(bound, -(-extra // top_weight.size(1))))
    divisors = torch.arange(1, depth + 1, dtype=weight.dtype)
    priority = (top_weight.unsqueeze(-1) / divisors).flatten(1)  # [L, n * depth], expert-major
    picks = priority.topk(extra, dim=-1, sorted=True).indices // depth
    return top_expert.gather(-1, picks)


def add_picks(counts: torch.Tensor, picks: torch.Tensor, taken: torch.Tensor) -> torch.Tensor:
    """Add one replica to `counts[..., e]` for every pick `e` whose `taken` flag is set."""
    return counts.scatter_add(-1, picks, taken.to(counts.dtype))


def hybrid_counts(weight: torch.Tensor, num_replicas: int, tails: list[int]) -> torch.Tensor:
    """Replica counts [L, K, E] for each tail length in `tails` (min-max bulk, Sainte-Lague tail)."""
    num_layers, num_experts = weight.shape
    extra = num_replicas - num_experts
    counts = torch.ones(num_layers, len(tails), num_experts, dtype=torch.int64)
    if extra == 0:
        return counts
    tail = torch.tensor(tails, dtype=torch.int64)
    order = minmax_order(weight, extra).unsqueeze(1).expand(-1, len(tails), -1)  # [L, K, extra]
    in_bulk = torch.arange(extra) < (extra - tail).unsqueeze(-1)  # [K, extra]
    counts = add_picks(counts, order, in_bulk.expand(num_layers, -1, -1))
    longest = max(tails)
    if longest == 0:
        return counts
    # The j-th further replica of expert e has Sainte-Lague priority w / (c + j - 1/2). As above, only the
    # `longest` experts with the highest first priority can receive a pick (each at most `longest` times).
    first = weight.unsqueeze(1) / (counts.to(weight.dtype) - 0.5)  # [L, K, E]
    top_expert = first.topk(min(longest, num_experts), dim=-1).indices  # [L, K, n]
    top_weight = weight.unsqueeze(1).expand_as(first).gather(-1, top_expert)
    base = counts.gather(-1, top_expert).to(weight.dtype)
    steps = torch.arange(longest, dtype=weight.dtype)
    priority = (top_weight.unsqueeze(-1) / (base.unsqueeze(-1) + steps - 0.5)).flatten(2)  # [L, K, n * longest]
    picks = top_expert.gather(-1, priority.topk(longest, dim=-1, sorted=True).indices // longest)
    in_tail = torch.arange(longest) < tail.unsqueeze(-1)  # [K, longest]
    return add_picks(counts, picks, in_tail.expand(num_layers, -1, -1))
# EVOLVE-BLOCK-END


def replicas_of(counts: torch.Tensor) -> torch.Tensor:
    """Expert of each replica, replicas of an expert adjacent: [N, R] for counts [N, E]."""
    rows, num_experts = counts.shape
    experts = torch.arange(num_experts).expand(rows, -1).flatten()
    return torch.repeat_interleave(experts, counts.flatten()).view(rows, -1)


# EVOLVE-BLOCK-START packing
def snake_gpu(num_slots: int, num_gpus: int) -> torch.Tensor:
    """GPU receiving the p-th heaviest slot when dealing in snake order: [R]."""
    position = torch.arange(num_slots)
    round_, lane = position // num_gpus, position % num_gpus
    return torch.where(round_ % 2 == 0, lane, num_gpus - 1 - lane)


def snake_pack(slot_load: torch.Tensor, num_gpus: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deal items onto GPUs in snake order. Returns (item at each slot [N, R], GPU loads [N, G]).

    The p-th heaviest item lands on GPU `snake_gpu[p]` at position p // G, i.e. slot gpu * R/G + p // G.
    """
    rows, num_slots = slot_load.shape
    per_gpu = num_slots // num_gpus
    sorted_load, order = slot_load.sort(dim=-1, descending=True, stable=True)
    gpu = snake_gpu(num_slots, num_gpus)
    slot = (gpu * per_gpu + torch.arange(num_slots) // num_gpus).expand(rows, -1)
    item_at_slot = torch.empty_like(order).scatter_(1, slot, order)
    gpu_load = torch.zeros(rows, num_gpus, dtype=slot_load.dtype).scatter_add_(1, gpu.expand(rows, -1), sorted_load)
    return item_at_slot, gpu_load
# EVOLVE-BLOCK-END


# EVOLVE-BLOCK-START policy
def plan_placement(weight: torch.Tensor, num_replicas: int, num_gpus: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Try every tail length, pack each, keep per layer the one with the lightest hottest GPU."""
    num_layers, num_experts = weight.shape
    tails = tail_lengths(num_replicas - num_experts)
    counts = hybrid_counts(weight, num_replicas, tails).flatten(0, 1)  # [L * K, E]
    rows_weight = weight.repeat_interleave(len(tails), dim=0)
    replica_expert = replicas_of(counts)
    replica_load = (rows_weight / counts).gather(-1, replica_expert)
    item_at_slot, gpu_load = snake_pack(replica_load, num_gpus)
    peak = gpu_load.amax(-1).view(num_layers, len(tails))
    chosen = torch.arange(num_layers) * len(tails) + peak.argmin(-1)  # first minimum: the shortest tail
    phy2log = replica_expert[chosen].gather(-1, item_at_slot[chosen])
    return phy2log, counts[chosen]
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
    """Plan a placement of `num_replicas` slots on `num_gpus` GPUs for the load `weight` [L, E]."""
    weight = weight.double().cpu()
    if num_replicas % num_gpus or num_replicas < weight.size(1):
        raise ValueError(f"unsupported shape: R={num_replicas}, G={num_gpus}, E={weight.size(1)}")
    phy2log, counts = plan_placement(weight, num_replicas, num_gpus)
    return phy2log, build_log2phy(phy2log, counts), counts
