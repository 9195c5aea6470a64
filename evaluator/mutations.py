"""The EPLB catalogue for the offline mutator: alternative implementations of each EVOLVE block, kept as text.

Each entry is the full body of one block (the text between its marker lines) and honours that block's
contract exactly as the seed states it, so any entry can replace any other entry of the same block:

- `replication`: `replicate_experts(weight [n, m] float64, num_phy) -> (phy2log [n, num_phy],
  rank [n, num_phy], logcnt [n, m])`, every expert with at least one slot.
- `packing`: `balanced_packing(weight [n, k], num_packs) -> (pack_index [n, k], rank_in_pack [n, k])`,
  every pack holding exactly k / num_packs items with ranks 0..cap-1.
- `policy`: `plan_placement(weight [L, E], R, groups, nodes, gpus) -> (phy2log [L, R], logcnt [L, E])`.

Entries are vectorised across rows: they loop over items, replicas, rounds or search steps, never over
layers. Tunable numbers are module-level constants written `NAME = value  # range [lo, hi]`; the
mutator's `perturb` operator finds them by that shape. Constant names carry the block's prefix
(`REP_`, `PACK_`, `POLICY_`) and helper names are private to their block, so entries never collide.

The mutator itself only knows block labels and text; the EPLB task hands it this catalogue.
"""
from __future__ import annotations

from evolve.proposers.mutator import BlockImpl

# --------------------------------------------------------------------------------------------------
# replication
# --------------------------------------------------------------------------------------------------

_SLOTS_FROM_COUNTS = '''
def _slots_from_counts(logcnt: torch.Tensor, num_phy: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay out slots for given replica counts: slot j < m holds expert j, extra replicas follow in expert order."""
    n, m = logcnt.shape
    extra = logcnt - 1
    ends = extra.cumsum(-1)
    pos = torch.arange(num_phy - m, dtype=torch.int64).expand(n, -1).contiguous()
    owner = torch.searchsorted(ends, pos, right=True).clamp(max=m - 1)
    rank_extra = pos - (ends.gather(-1, owner) - extra.gather(-1, owner)) + 1
    phy2log = torch.cat([torch.arange(m, dtype=torch.int64).expand(n, -1), owner], dim=-1)
    rank = torch.cat([torch.zeros(n, m, dtype=torch.int64), rank_extra], dim=-1)
    return phy2log, rank
'''

_REP_GREEDY = '''
def replicate_experts(weight: torch.Tensor, num_phy: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Give each extra slot to the expert whose load per replica is highest (minimises the peak replica load)."""
    n, m = weight.shape
    w = weight.double()
    rows = torch.arange(n)
    logcnt = torch.ones(n, m, dtype=torch.int64)
    for _ in range(num_phy - m):
        logcnt[rows, (w / logcnt).argmax(-1)] += 1
    phy2log, rank = _slots_from_counts(logcnt, num_phy)
    return phy2log, rank, logcnt
'''

_DIVISOR_PICKS = '''
def _divisor_picks(w: torch.Tensor, logcnt: torch.Tensor, picks: int, offset: float) -> torch.Tensor:
    """`logcnt` plus `picks` replicas, each to the expert with the highest w / (count + offset) at its turn.

    An expert's next priorities w / (c + offset), w / (c + 1 + offset), ... fall, so the turns take the `picks`
    largest of them. Only the `picks` experts with the highest first priority can take one (any other is
    beaten by each of them at every turn), so one top-k over picks x picks values replaces the loop.
    """
    n, m = w.shape
    if picks <= 0:
        return logcnt
    top = (w / (logcnt + offset)).topk(min(picks, m), dim=-1).indices
    steps = torch.arange(picks, dtype=torch.float64)
    priority = w.gather(-1, top)[:, :, None] / (logcnt.gather(-1, top)[:, :, None] + offset + steps)
    chosen = top.gather(-1, priority.view(n, -1).topk(picks, dim=-1).indices // picks)
    return logcnt.scatter_add(1, chosen, torch.ones_like(chosen))
'''

_REP_TOPK = '''
def replicate_experts(weight: torch.Tensor, num_phy: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The greedy's counts in one step: its j-th extra replica of expert e is taken at priority w_e / j, and
    each expert's priorities fall with j, so the greedy takes exactly the num_phy - m largest of them.
    """
    n, m = weight.shape
    logcnt = _divisor_picks(weight.double(), torch.ones(n, m, dtype=torch.int64), num_phy - m, 0.0)
    phy2log, rank = _slots_from_counts(logcnt, num_phy)
    return phy2log, rank, logcnt
'''

_REP_BLEND = '''
REP_BLEND = 0.02  # range [0.0, 0.05]


def replicate_experts(weight: torch.Tensor, num_phy: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The greedy's counts (in one top-k step) planned on the load blended toward the row mean.

    The next window's load drifts toward the mean, so a little blending spreads replicas as a hedge.
    """
    n, m = weight.shape
    w = weight.double()
    w = w + REP_BLEND * w.mean(-1, keepdim=True)
    logcnt = _divisor_picks(w, torch.ones(n, m, dtype=torch.int64), num_phy - m, 0.0)
    phy2log, rank = _slots_from_counts(logcnt, num_phy)
    return phy2log, rank, logcnt
'''

_REP_DIVISOR = '''
REP_TAIL = {tail}  # range [0.0, 0.25]
REP_OFFSET = {offset}  # range [0.0, 1.0]


def replicate_experts(weight: torch.Tensor, num_phy: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Divisor method: the head of the extra slots goes by load per replica, the tail by w / (count + offset).

    Offset 0 is the peak-minimising greedy, 0.5 is Sainte-Lague, 1 is D'Hondt; a larger offset hands the
    last slots to mid-load experts, which hedges when the next window's hot experts shift.
    """
    n, m = weight.shape
    w = weight.double()
    rows = torch.arange(n)
    logcnt = torch.ones(n, m, dtype=torch.int64)
    extra = num_phy - m
    tail_start = extra - int(round(REP_TAIL * extra))
    for step in range(extra):
        offset = REP_OFFSET if step >= tail_start else 0.0
        logcnt[rows, (w / (logcnt + offset)).argmax(-1)] += 1
    phy2log, rank = _slots_from_counts(logcnt, num_phy)
    return phy2log, rank, logcnt
'''

_REP_DIVISOR_TOPK = '''
REP_TAIL = {tail}  # range [0.0, 0.25]
REP_OFFSET = {offset}  # range [0.0, 1.0]


def replicate_experts(weight: torch.Tensor, num_phy: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The divisor-tail rule in two top-k steps instead of a loop over slots: the head's picks are the
    largest values of w / (count + 0), the tail's, from the head's counts on, the largest of w / (count + offset).
    """
    n, m = weight.shape
    w = weight.double()
    extra = num_phy - m
    tail = int(round(REP_TAIL * extra))
    logcnt = _divisor_picks(w, torch.ones(n, m, dtype=torch.int64), extra - tail, 0.0)
    logcnt = _divisor_picks(w, logcnt, tail, REP_OFFSET)
    phy2log, rank = _slots_from_counts(logcnt, num_phy)
    return phy2log, rank, logcnt
'''

_REP_WATERFILL = '''
REP_BISECT_STEPS = 40  # range [8, 64]


def replicate_experts(weight: torch.Tensor, num_phy: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Water-filling: bisect the per-replica threshold T with count = max(1, ceil(w / T)), then top up.

    The loop runs over bisection steps, not over slots, so its cost does not grow with the redundancy.
    """
    n, m = weight.shape
    w = weight.double().clamp(min=0.0)
    hi = w.max(-1, keepdim=True).values.clamp(min=1e-12)  # at T = max load every expert needs one slot
    lo = torch.zeros_like(hi)
    for _ in range(REP_BISECT_STEPS):
        mid = (lo + hi) / 2
        fits = torch.ceil(w / mid).clamp(min=1).sum(-1, keepdim=True) <= num_phy
        hi = torch.where(fits, mid, hi)
        lo = torch.where(fits, lo, mid)
    logcnt = torch.ceil(w / hi).clamp(min=1).long()
    left = num_phy - logcnt.sum(-1)
    rows = torch.arange(n)
    while bool((left > 0).any()):  # slots the threshold left over go greedily
        give = left > 0
        pick = (w / logcnt).argmax(-1)
        logcnt[rows[give], pick[give]] += 1
        left = left - give.long()
    phy2log, rank = _slots_from_counts(logcnt, num_phy)
    return phy2log, rank, logcnt
'''

# --------------------------------------------------------------------------------------------------
# packing
# --------------------------------------------------------------------------------------------------

# Every base returns (pack_index, rank_in_pack). The round-based ones (snake, LPT by rounds, largest
# differencing) give each pack exactly one item per round of num_packs sorted items, so an item's rank
# is its round and no pass over the packs' contents is needed.
_PACK_BASES = {
    "lpt": '''
def _pack_base(w: torch.Tensor, num_packs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Longest processing time first: each item, heaviest first, onto the lightest pack that has room."""
    n, k = w.shape
    cap = k // num_packs
    order = w.sort(dim=-1, descending=True, stable=True).indices
    rows = torch.arange(n)
    load = torch.zeros(n, num_packs, dtype=w.dtype)
    size = torch.zeros(n, num_packs, dtype=torch.int64)
    full = torch.full_like(load, float("inf"))
    pack_index = torch.empty(n, k, dtype=torch.int64)
    rank_in_pack = torch.empty(n, k, dtype=torch.int64)
    for pos in range(k):
        item = order[:, pos]
        pack = torch.where(size < cap, load, full).argmin(-1)
        pack_index[rows, item] = pack
        rank_in_pack[rows, item] = size[rows, pack]
        load[rows, pack] += w[rows, item]
        size[rows, pack] += 1
    return pack_index, rank_in_pack
''',
    "lpt-rounds": '''
def _pack_base(w: torch.Tensor, num_packs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LPT by rounds: deal the items num_packs at a time, the round's heaviest item to the lightest pack.

    Each round gives every pack one item, so the loop runs cap times instead of k times.
    """
    n, k = w.shape
    cap = k // num_packs
    order = w.sort(dim=-1, descending=True, stable=True).indices
    rounds = w.gather(-1, order).view(n, cap, num_packs)
    load = torch.zeros(n, num_packs, dtype=w.dtype)
    pack_of_pos = torch.empty(n, cap, num_packs, dtype=torch.int64)
    for r in range(cap):
        lightest_first = load.sort(dim=-1, stable=True).indices
        pack_of_pos[:, r] = lightest_first
        load.scatter_add_(1, lightest_first, rounds[:, r])
    pack_index = torch.empty_like(order).scatter_(1, order, pack_of_pos.view(n, k))
    round_of_pos = torch.arange(k, dtype=torch.int64) // num_packs
    return pack_index, torch.empty_like(order).scatter_(1, order, round_of_pos.expand(n, k))
''',
    "snake": '''
import numpy as np


def _pack_base(w: torch.Tensor, num_packs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Snake dealing: sorted items go 0..P-1 on even rounds and P-1..0 on odd rounds; no loop at all.

    The sort is numpy's (introsort): on rows of a few hundred values it takes about a third of the time of
    torch's, and ties may fall in any order, since any order of equal items packs equally well.
    """
    n, k = w.shape
    order = torch.from_numpy(np.argsort(-w.numpy(), axis=-1))
    pos = torch.arange(k, dtype=torch.int64)
    rounds, col = pos // num_packs, pos % num_packs
    pack_of_pos = torch.where(rounds % 2 == 0, col, num_packs - 1 - col)
    pack_index = torch.empty_like(order).scatter_(1, order, pack_of_pos.expand(n, k))
    return pack_index, torch.empty_like(order).scatter_(1, order, rounds.expand(n, k))
''',
    "ldm": '''
def _pack_base(w: torch.Tensor, num_packs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced largest differencing: rounds of num_packs sorted items start as partial partitions;
    the two partitions with the largest spread merge, heaviest pack of one with lightest of the other.

    Every merge pairs packs one to one, so each final pack holds exactly one item per round (cap items).
    """
    n, k = w.shape
    cap = k // num_packs
    order = w.sort(dim=-1, descending=True, stable=True).indices
    sums = w.gather(-1, order).view(n, cap, num_packs).clone()  # partition t, pack slot s (descending)
    pos = torch.arange(k, dtype=torch.int64)
    part = (pos // num_packs).expand(n, k).clone()  # partition of each sorted item
    slot = (pos % num_packs).expand(n, k).clone()  # its slot inside the partition
    rows = torch.arange(n)
    alive = torch.ones(n, cap, dtype=torch.bool)
    flip = torch.arange(num_packs - 1, -1, -1, dtype=torch.int64)
    for _ in range(cap - 1):
        spread = (sums[:, :, 0] - sums[:, :, -1]).masked_fill(~alive, -1.0)
        pair = spread.topk(2, dim=-1).indices
        a, b = pair[:, 0], pair[:, 1]
        merged = sums[rows, a] + sums[rows, b][:, flip]
        new_sums, perm = merged.sort(dim=-1, descending=True, stable=True)
        new_slot = torch.empty_like(perm)
        new_slot.scatter_(1, perm, torch.arange(num_packs, dtype=torch.int64).expand(n, -1).contiguous())
        sums[rows, a] = new_sums
        sums[rows, b] = 0.0
        alive[rows, b] = False
        in_a = part == a[:, None]
        in_b = part == b[:, None]
        slot = torch.where(
            in_a, new_slot.gather(-1, slot), torch.where(in_b, new_slot.gather(-1, num_packs - 1 - slot), slot)
        )
        part = torch.where(in_b, a[:, None], part)
    pack_index = torch.empty_like(order).scatter_(1, order, slot)
    return pack_index, torch.empty_like(order).scatter_(1, order, (pos // num_packs).expand(n, k))
''',
}

# A refinement works on the packs' contents laid out flat: position pack * cap + rank holds an item.
_PACK_LAYOUT = '''
def _layout(pack_index: torch.Tensor, rank_in_pack: torch.Tensor, cap: int) -> torch.Tensor:
    """Item at each position pack * cap + rank: [n, k]."""
    n, k = pack_index.shape
    items = torch.arange(k, dtype=torch.int64).expand(n, k)
    return torch.empty_like(pack_index).scatter_(1, pack_index * cap + rank_in_pack, items)


def _unlayout(members: torch.Tensor, cap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack index and rank of each item from the flat layout."""
    n, k = members.shape
    pos = torch.arange(k, dtype=torch.int64).expand(n, k)
    return (torch.empty_like(members).scatter_(1, members, pos // cap),
            torch.empty_like(members).scatter_(1, members, pos % cap))
'''

_PACK_SWAP = '''
def _swap_refine(w: torch.Tensor, pack_index: torch.Tensor, rank_in_pack: torch.Tensor, num_packs: int,
                 rounds: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Local search: each round, every row makes the one swap between its heaviest pack and any other pack
    that lowers the pair's larger load the most; rows with no improving swap stay as they are.
    """
    n, k = w.shape
    cap = k // num_packs
    rows = torch.arange(n)
    members = _layout(pack_index, rank_in_pack, cap).view(n, num_packs, cap)
    item_w = w.gather(-1, members.view(n, k)).view(n, num_packs, cap)
    for _ in range(rounds):
        load = item_w.sum(-1)
        heavy = load.argmax(-1)
        heavy_load = load[rows, heavy]
        # Swapping item a of the heavy pack with item b of pack p moves d = w_a - w_b off the heavy pack and
        # leaves the pair's larger load at (H + L_p + |H - L_p - 2d|) / 2: below H exactly when the score is.
        target = 2 * item_w + (heavy_load[:, None] - load)[:, :, None]  # [n, P, cap(b)]
        score = (target[:, :, None, :] - 2 * item_w[rows, heavy][:, None, :, None]).abs_()
        best = score.add_(load[:, :, None, None]).view(n, -1).min(-1)
        better = best.values < heavy_load * (1 - 1e-12)
        if not bool(better.any()):
            break
        r, h, idx = rows[better], heavy[better], best.indices[better]
        p, a, b = idx // (cap * cap), (idx // cap) % cap, idx % cap
        item_a, item_b = members[r, h, a], members[r, p, b]
        w_a, w_b = item_w[r, h, a], item_w[r, p, b]
        members[r, h, a], members[r, p, b] = item_b, item_a
        item_w[r, h, a], item_w[r, p, b] = w_b, w_a
    return _unlayout(members.view(n, k), cap)
'''

_PACK_PAIRS = '''
def _pair_refine(w: torch.Tensor, pack_index: torch.Tensor, rank_in_pack: torch.Tensor, num_packs: int,
                 rounds: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Local search over matched pairs: each round pairs the heaviest pack with the lightest, the second
    heaviest with the second lightest, and so on, and in every pair makes the one swap of an item of each
    that lowers the pair's larger load the most (none when no swap lowers it). The pairs are disjoint, so
    they all swap at once: a round is a fixed number of tensor operations, whatever the number of packs.
    """
    n, k = w.shape
    cap, half = k // num_packs, num_packs // 2
    members = _layout(pack_index, rank_in_pack, cap)
    item_w = w.gather(-1, members)
    slot = torch.arange(cap, dtype=torch.int64)
    for _ in range(rounds if half else 0):
        load = item_w.view(n, num_packs, cap).sum(-1)
        by_load = load.argsort(-1)
        light, heavy = by_load[:, :half], by_load.flip(-1)[:, :half]  # [n, half], heavy[j] meets light[j]
        at_heavy = (heavy * cap)[:, :, None] + slot  # flat positions of the heavy packs' items [n, half, cap]
        at_light = (light * cap)[:, :, None] + slot
        heavy_w = item_w.gather(1, at_heavy.view(n, -1)).view(n, half, cap)
        light_w = item_w.gather(1, at_light.view(n, -1)).view(n, half, cap)
        heavy_load, light_load = load.gather(1, heavy), load.gather(1, light)
        moved = heavy_w[:, :, :, None] - light_w[:, :, None, :]  # swap a (heavy) with b (light): [n, half, a, b]
        larger = torch.maximum(heavy_load[:, :, None, None] - moved, light_load[:, :, None, None] + moved)
        best, pick = larger.view(n, half, -1).min(-1)
        swap = best < heavy_load * (1 - 1e-12)
        a = at_heavy.gather(2, (pick // cap)[:, :, None]).squeeze(2)  # flat positions to exchange [n, half]
        b = at_light.gather(2, (pick % cap)[:, :, None]).squeeze(2)
        item_a, item_b = members.gather(1, a), members.gather(1, b)
        # a pair that does not swap writes each item back where it was
        members = members.scatter(1, a, torch.where(swap, item_b, item_a))
        members = members.scatter(1, b, torch.where(swap, item_a, item_b))
        item_w = w.gather(-1, members)
    return _unlayout(members, cap)
'''

_PACK_WRAPPER = '''
def balanced_packing(weight: torch.Tensor, num_packs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """{doc}

    weight: [n, k] with k divisible by num_packs. Returns pack index and rank inside the pack, both [n, k].
    """
    n, k = weight.shape
    if num_packs == 1 or k == num_packs:  # nothing to balance: one pack, or one item per pack
        item, zero = torch.arange(k, dtype=torch.int64).expand(n, k).clone(), torch.zeros(n, k, dtype=torch.int64)
        return (zero, item) if num_packs == 1 else (item, zero)
    w = weight.double()
    pack_index, rank_in_pack = _pack_base(w, num_packs){refine}
    return pack_index, rank_in_pack
'''

_PACK_DOCS = {
    "lpt": "Heaviest item first onto the lightest pack that still has room",
    "lpt-rounds": "LPT dealt in rounds of num_packs items, the heaviest of each round onto the lightest pack",
    "snake": "Snake (zig-zag) dealing of the sorted items",
    "ldm": "Balanced largest differencing (Karmarkar-Karp with equal pack sizes)",
}

# --------------------------------------------------------------------------------------------------
# policy
# --------------------------------------------------------------------------------------------------

_POLICY_SMOOTH = '''
POLICY_SMOOTH = {smooth}  # range [0.0, 0.05]


def _planning_load(weight: torch.Tensor) -> torch.Tensor:
    """Plan on the load plus a share of the layer mean: next window's load drifts toward the mean."""
    if POLICY_SMOOTH <= 0:
        return weight
    return weight + POLICY_SMOOTH * weight.mean(-1, keepdim=True)
'''

_POLICY_BODIES = {
    "hierarchical": '''
def plan_placement(
    weight: torch.Tensor, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hierarchical (groups onto nodes, then replicate and pack inside each node) when groups divide over nodes."""
    plan = _planning_load(weight)
    if num_groups % num_nodes == 0:
        return rebalance_hierarchical(plan, num_replicas, num_groups, num_nodes, num_gpus)
    return rebalance_hierarchical(plan, num_replicas, 1, 1, num_gpus)
''',
    "global": '''
def _global_plan(plan: torch.Tensor, num_replicas: int, num_gpus: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Replicate over all slots and pack the slots onto all GPUs in one pass, ignoring groups and nodes.

    The blocks are called directly: through rebalance_hierarchical with one group and one node the group
    and node mappings are identities, so the plan is the same, in fewer tensor operations.
    """
    phy2log, _, logcnt = replicate_experts(plan, num_replicas)
    pack, rank = balanced_packing((plan / logcnt).gather(-1, phy2log), num_gpus)
    slot = pack * (num_replicas // num_gpus) + rank
    return torch.empty_like(phy2log).scatter_(1, slot, phy2log), logcnt


def plan_placement(
    weight: torch.Tensor, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One global pass over all GPUs, ignoring node boundaries.

    More freedom than the hierarchical plan, at the price of cross-node traffic the score does not see.
    """
    return _global_plan(_planning_load(weight), num_replicas, num_gpus)
''',
    "best-of": '''
def _gpu_peak(weight: torch.Tensor, phy2log: torch.Tensor, logcnt: torch.Tensor, num_gpus: int) -> torch.Tensor:
    """Predicted peak GPU load of each layer when `weight` is served by the plan."""
    slot_load = weight.gather(-1, phy2log) / logcnt.gather(-1, phy2log)
    return slot_load.view(weight.size(0), num_gpus, -1).sum(-1).max(-1).values


def plan_placement(
    weight: torch.Tensor, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plan both hierarchically and globally; keep, layer by layer, the plan with the lower predicted peak."""
    plan = _planning_load(weight)
    flat = rebalance_hierarchical(plan, num_replicas, 1, 1, num_gpus)
    if num_groups % num_nodes != 0:
        return flat
    hier = rebalance_hierarchical(plan, num_replicas, num_groups, num_nodes, num_gpus)
    take_flat = _gpu_peak(weight, *flat, num_gpus) < _gpu_peak(weight, *hier, num_gpus)
    phy2log = torch.where(take_flat[:, None], flat[0], hier[0])
    logcnt = torch.where(take_flat[:, None], flat[1], hier[1])
    return phy2log, logcnt
''',
}


def _join(*parts: str) -> str:
    """Glue text pieces into one block body: two blank lines between top-level pieces, one final newline."""
    return "\n\n\n".join(p.strip("\n") for p in parts if p.strip()) + "\n"


def _replication() -> list[BlockImpl]:
    def impl(key: str, summary: str, text: str, params: tuple[str, ...] = (), cost: int = 0) -> BlockImpl:
        # constants first, then the shared slot-layout helper, then the function itself
        head, fn = text.split("\ndef replicate_experts", 1)
        helpers = [_SLOTS_FROM_COUNTS] + ([_DIVISOR_PICKS] if "_divisor_picks(" in fn else [])
        return BlockImpl("replication", key, summary, _join(head, *helpers, "def replicate_experts" + fn),
                         params, cost)

    def divisor(tail: float, offset: float, template: str = _REP_DIVISOR) -> str:
        return template.format(tail=tail, offset=offset)

    return [
        impl("greedy", "greedy on load per replica (peak-optimal for the planning window)", _REP_GREEDY, cost=2),
        impl("greedy-topk", "the greedy's counts in one vectorised top-k over w / j, no loop", _REP_TOPK),
        impl("blend", "the greedy's counts in one top-k step, planned on load blended toward the row mean",
             _REP_BLEND, ("REP_BLEND",)),
        impl("sainte-lague-tail", "greedy head, Sainte-Lague divisor (offset 0.5) for the last 10% of extra slots",
             divisor(0.1, 0.5), ("REP_TAIL", "REP_OFFSET"), cost=2),
        impl("dhondt-tail", "greedy head, D'Hondt divisor (offset 1) for the last 10% of extra slots",
             divisor(0.1, 1.0), ("REP_TAIL", "REP_OFFSET"), cost=2),
        impl("sainte-lague-tail-topk",
             "the Sainte-Lague tail rule (last 10% of extra slots) in two top-k steps, no loop",
             divisor(0.1, 0.5, _REP_DIVISOR_TOPK), ("REP_TAIL", "REP_OFFSET")),
        impl("dhondt-tail-topk", "the D'Hondt tail rule (last 10% of extra slots) in two top-k steps, no loop",
             divisor(0.1, 1.0, _REP_DIVISOR_TOPK), ("REP_TAIL", "REP_OFFSET")),
        impl("waterfill", "threshold water-filling by bisection, leftover slots greedily", _REP_WATERFILL,
             ("REP_BISECT_STEPS",), cost=2),  # tens of bisection steps, then a loop over the leftover slots
    ]


def _packing() -> list[BlockImpl]:
    refiners = {  # key suffix: (constant line, helper, call, doc)
        "": ("", "", "", "."),
        "+swap": ("PACK_SWAP_ROUNDS = 8  # range [1, 64]", _PACK_SWAP,
                  "\n    pack_index, rank_in_pack = _swap_refine(w, pack_index, rank_in_pack, num_packs, "
                  "PACK_SWAP_ROUNDS)", ", then swap refinement."),
        "+pairs": ("PACK_PAIR_ROUNDS = 2  # range [1, 8]", _PACK_PAIRS,
                   "\n    pack_index, rank_in_pack = _pair_refine(w, pack_index, rank_in_pack, num_packs, "
                   "PACK_PAIR_ROUNDS)", ", then swaps inside matched heavy-light pairs of packs."),
    }
    out = []
    for base in ("lpt", "lpt-rounds", "snake", "ldm"):
        for suffix, (constant, helper, call, tail) in refiners.items():
            key, doc = base + suffix, _PACK_DOCS[base] + tail
            pieces = [constant, _PACK_BASES[base], _PACK_LAYOUT if helper else "", helper,
                      _PACK_WRAPPER.format(doc=doc, refine=call)]
            params = (constant.split(" ", 1)[0],) if constant else ()
            # a refinement's loop runs over a few rounds: it adds a class only to a loop-free base
            cost = {"lpt": 2, "lpt-rounds": 1, "snake": 0, "ldm": 1}[base] + (1 if suffix and base == "snake" else 0)
            out.append(BlockImpl("packing", key, doc, _join(*pieces), params, cost))
    return out


def _policy() -> list[BlockImpl]:
    summaries = {
        "hierarchical": "hierarchical when groups divide over nodes, else global",
        "global": "one global pass over all GPUs",
        "best-of": "hierarchical and global, the lower predicted peak per layer",
    }
    out = []
    for key, body in _POLICY_BODIES.items():
        # no policy loops; best-of plans twice (hierarchically and globally), so it costs a class more
        cost = {"hierarchical": 0, "global": 0, "best-of": 2}[key]
        out.append(BlockImpl("policy", key, summaries[key], _join(_POLICY_SMOOTH.format(smooth=0.0), body),
                             ("POLICY_SMOOTH",), cost))
        out.append(BlockImpl("policy", key + "-smooth", summaries[key] + ", planned on load smoothed toward the mean",
                             _join(_POLICY_SMOOTH.format(smooth=0.02), body), ("POLICY_SMOOTH",), cost))
    return out


CATALOGUE: dict[str, list[BlockImpl]] = {
    "replication": _replication(),
    "packing": _packing(),
    "policy": _policy(),
}


def implementations(label: str) -> list[BlockImpl]:
    """The catalogue entries for one block label (empty for a label the catalogue does not cover)."""
    return list(CATALOGUE.get(label, []))
