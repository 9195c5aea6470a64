"""Seed balancer: hierarchical expert-parallelism load balancing in the style of DeepSeek's EPLB.

Three steps, each a block a search may rewrite:
  1. replication: give hot experts redundant slots (greedy on load per replica),
  2. packing: deal items onto equal-size packs (heaviest first onto the lightest open pack),
  3. policy: hierarchical (groups onto nodes, then replicate and pack inside each node) when the
     groups divide evenly over the nodes, otherwise one global pass.
The frozen code around the blocks checks arguments and builds the `log2phy` map, so every child keeps
the contract `rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus)
-> (phy2log [L, R], log2phy [L, E, X], logcnt [L, E])`.
"""
from __future__ import annotations

import torch


# EVOLVE-BLOCK-START replication
def replicate_experts(weight: torch.Tensor, num_phy: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Give `num_phy - m` extra slots, one at a time, to the expert with the highest load per replica.

    weight: [n, m]. Returns phy2log [n, num_phy], replica rank of each slot [n, num_phy], and
    replica counts [n, m]. Slot j < m holds expert j; later slots hold the extra replicas.
    """
    n, m = weight.shape
    rows = torch.arange(n)
    phy2log = torch.arange(num_phy, dtype=torch.int64).repeat(n, 1)
    rank = torch.zeros(n, num_phy, dtype=torch.int64)
    logcnt = torch.ones(n, m, dtype=torch.int64)
    for slot in range(m, num_phy):
        hottest = (weight / logcnt).max(dim=-1).indices
        phy2log[:, slot] = hottest
        rank[:, slot] = logcnt[rows, hottest]
        logcnt[rows, hottest] += 1
    return phy2log, rank, logcnt
# EVOLVE-BLOCK-END


# EVOLVE-BLOCK-START packing
def balanced_packing(weight: torch.Tensor, num_packs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Put items onto `num_packs` packs of equal item count, heaviest item first onto the lightest open pack.

    weight: [n, k] with k divisible by num_packs. Returns pack index and position inside the pack,
    both [n, k]. Rows are packed together: the loop runs over items, never over rows.
    """
    n, k = weight.shape
    capacity = k // num_packs
    if capacity == 1:
        identity = torch.arange(k, dtype=torch.int64).expand(n, k).clone()
        return identity, torch.zeros(n, k, dtype=torch.int64)
    rows = torch.arange(n)
    order = weight.double().sort(dim=-1, descending=True, stable=True).indices
    pack_load = torch.zeros(n, num_packs, dtype=torch.float64)
    pack_size = torch.zeros(n, num_packs, dtype=torch.int64)
    pack_index = torch.empty(n, k, dtype=torch.int64)
    rank_in_pack = torch.empty(n, k, dtype=torch.int64)
    full = torch.tensor(float("inf"), dtype=torch.float64)
    for pos in range(k):
        item = order[:, pos]
        open_load = torch.where(pack_size < capacity, pack_load, full)
        pack = open_load.argmin(dim=-1)
        pack_index[rows, item] = pack
        rank_in_pack[rows, item] = pack_size[rows, pack]
        pack_load[rows, pack] += weight[rows, item].double()
        pack_size[rows, pack] += 1
    return pack_index, rank_in_pack
# EVOLVE-BLOCK-END


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """Row-wise inverse of a permutation: inv[perm[i]] = i."""
    inv = torch.empty_like(perm)
    inv.scatter_(1, perm, torch.arange(perm.size(1), dtype=torch.int64).expand(perm.shape).clone())
    return inv


def rebalance_hierarchical(
    weight: torch.Tensor, num_physical: int, num_groups: int, num_nodes: int, num_gpus: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack expert groups onto nodes, then replicate and pack onto GPUs inside each node.

    Returns phy2log [L, R] and logcnt [L, E].
    """
    num_layers, num_experts = weight.shape
    group_size = num_experts // num_groups
    groups_per_node = num_groups // num_nodes
    phy_per_gpu = num_physical // num_gpus

    # 1. groups onto nodes
    group_load = weight.unflatten(-1, (num_groups, group_size)).sum(-1)
    group_pack, group_rank = balanced_packing(group_load, num_nodes)
    # expert e of group g goes to "node-major" position (node, rank inside node, offset in group)
    log2mlog = (
        ((group_pack * groups_per_node + group_rank) * group_size).unsqueeze(-1)
        + torch.arange(group_size, dtype=torch.int64)
    ).flatten(-2)
    mlog2log = inverse_permutation(log2mlog)

    # 2. replicate inside each node: rows are (layer, node)
    node_weight = weight.gather(-1, mlog2log).view(-1, num_experts // num_nodes)
    phy2mlog, phy_rank, mlogcnt = replicate_experts(node_weight, num_physical // num_nodes)

    # 3. pack the node's slots onto its GPUs
    slot_load = (node_weight / mlogcnt).gather(-1, phy2mlog)
    gpu_pack, gpu_rank = balanced_packing(slot_load, num_gpus // num_nodes)
    phy2pphy = gpu_pack * phy_per_gpu + gpu_rank
    pphy2phy = inverse_permutation(phy2pphy)

    pphy2mlog = phy2mlog.gather(-1, pphy2phy)
    node_offset = torch.arange(0, num_experts, num_experts // num_nodes, dtype=torch.int64).view(1, -1, 1)
    pphy2mlog = (pphy2mlog.view(num_layers, num_nodes, -1) + node_offset).flatten(-2)
    phy2log = mlog2log.gather(-1, pphy2mlog)
    logcnt = mlogcnt.view(num_layers, -1).gather(-1, log2mlog)
    return phy2log, logcnt


# EVOLVE-BLOCK-START policy
def plan_placement(
    weight: torch.Tensor, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hierarchical when groups divide evenly over nodes, else one global pass over all GPUs."""
    if num_groups % num_nodes == 0:
        return rebalance_hierarchical(weight, num_replicas, num_groups, num_nodes, num_gpus)
    return rebalance_hierarchical(weight, num_replicas, 1, 1, num_gpus)
# EVOLVE-BLOCK-END


def build_log2phy(phy2log: torch.Tensor, logcnt: torch.Tensor) -> torch.Tensor:
    """Slots of each expert in slot order, padded with -1: [L, E, max replicas]."""
    num_layers, num_slots = phy2log.shape
    width = int(logcnt.max())
    order = torch.sort(phy2log, dim=-1, stable=True).indices  # slots grouped by expert, in slot order
    experts = phy2log.gather(-1, order)
    first = torch.cumsum(logcnt, dim=-1) - logcnt  # position of each expert's first slot in `order`
    replica = torch.arange(num_slots).expand(num_layers, -1) - first.gather(-1, experts)
    log2phy = torch.full((num_layers, logcnt.size(1), width), -1, dtype=torch.int64)
    rows = torch.arange(num_layers).unsqueeze(-1).expand(-1, num_slots)
    log2phy[rows, experts, replica] = order
    return log2phy


def rebalance_experts(
    weight: torch.Tensor, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plan a placement of `num_replicas` slots for the load `weight` [L, E]."""
    num_layers, num_experts = weight.shape
    if num_replicas % num_gpus or num_gpus % num_nodes or num_experts % num_groups or num_replicas < num_experts:
        raise ValueError(
            f"unsupported shape: R={num_replicas}, G={num_gpus}, N={num_nodes}, E={num_experts}, groups={num_groups}"
        )
    weight = weight.double().cpu()
    phy2log, logcnt = plan_placement(weight, num_replicas, num_groups, num_nodes, num_gpus)
    return phy2log, build_log2phy(phy2log, logcnt), logcnt
