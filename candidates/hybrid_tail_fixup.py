"""Hybrid tail replication (see hybrid_tail.py) plus a fix-up of replica counts, then snake packing.

Replication: the min-max rule for the bulk of the redundant slots and a Sainte-Lague tail of adaptively
chosen length, as in hybrid_tail.py. The tail spreads replicas more evenly at some cost in the hottest
replica; the fix-up then looks at the two hottest experts (per replica) as receivers and the two cheapest
donors (experts with spare replicas whose load per replica stays lowest without one), and moves the one
replica that lowers the peak most, if any does. Every tail length is fixed up and packed side by side and
each layer keeps the one with the lightest hottest GPU on the planning window.
Packing deals slots sorted by load onto GPUs in snake order. Batched over layers; loops run only over
fix-up rounds. Groups and nodes are ignored.
"""
from __future__ import annotations

import math

import torch

TAIL_FRACTIONS = (0.0, 0.05, 0.1, 0.2)  # tail lengths tried, as fractions of the redundant slots
FIXUP_ROUNDS = 1  # replica moves per layer and tail length


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

# EVOLVE-BLOCK-START fixup
def fix_up_counts(weight: torch.Tensor, counts: torch.Tensor, rounds: int = FIXUP_ROUNDS) -> torch.Tensor:
    """Move single replicas from cheap donors to the hottest experts while that lowers the peak.

    Receivers: the two experts with the highest load per replica (the peak sits on one of them). Donors:
    the two experts, among those with at least two replicas, whose load per replica stays lowest after
    giving one up. Of the four moves each row takes the one leaving the lowest peak, and only when that
    peak is strictly below the current one. (A replica taken *from* the hottest experts can never lower
    the peak, so replicas flow towards them.) The tail phase trades peak for evenness; this undoes the
    trades that cost the most. Batched over rows; the loop runs over rounds.
    """
    num_rows, num_experts = counts.shape
    if num_experts < 2:
        return counts
    rows = torch.arange(num_rows)
    inf = torch.tensor(float("inf"), dtype=weight.dtype)
    for _ in range(rounds):
        c = counts.to(weight.dtype)
        top_load, top_expert = (weight / c).topk(min(3, num_experts), dim=-1)  # [N, 3]
        receiver = top_expert[:, :2]
        receiver_after = weight.gather(-1, receiver) / (counts.gather(-1, receiver) + 1).to(weight.dtype)
        donor_after, donor = torch.where(counts > 1, weight / (c - 1).clamp_min(1), inf).topk(2, dim=-1, largest=False)
        # peak of everything else: the largest of the top three not being changed by the move
        changed = (top_expert[:, None, None, :] == donor[:, :, None, None]) | (
            top_expert[:, None, None, :] == receiver[:, None, :, None]
        )  # [N, donor, receiver, 3]
        rest = torch.where(changed, torch.zeros_like(top_load)[:, None, None, :], top_load[:, None, None, :]).amax(-1)
        peak_after = torch.maximum(rest, torch.maximum(donor_after[:, :, None], receiver_after[:, None, :]))
        peak_after = torch.where(donor[:, :, None] == receiver[:, None, :], inf, peak_after).flatten(1)
        best_peak, best = peak_after.min(-1)
        better = best_peak < top_load[:, 0] * (1 - 1e-12)
        if not bool(better.any()):
            break
        r = rows[better]
        counts = counts.clone()
        counts[r, donor[r, best[better] // 2]] -= 1
        counts[r, receiver[r, best[better] % 2]] += 1
    return counts
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
    """Try every tail length, fix up and pack each, keep per layer the one with the lightest hottest GPU."""
    num_layers, num_experts = weight.shape
    tails = tail_lengths(num_replicas - num_experts)
    rows_weight = weight.repeat_interleave(len(tails), dim=0)
    counts = fix_up_counts(rows_weight, hybrid_counts(weight, num_replicas, tails).flatten(0, 1))  # [L * K, E]
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
