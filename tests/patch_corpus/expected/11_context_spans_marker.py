"""Tiny balancer for the patch corpus: two EVOLVE blocks around frozen glue."""
import torch


# EVOLVE-BLOCK-START replication
def replicate(weight, num_phy):
    """Greedy by load per replica."""
    n, m = weight.shape
    logcnt = torch.ones(n, m, dtype=torch.int64)
    for _ in range(m, num_phy):
        hottest = (weight / logcnt).max(dim=-1).indices
        logcnt[torch.arange(n), hottest] += 1
    return logcnt
# EVOLVE-BLOCK-END


def clamp_counts(logcnt):
    """Frozen helper: every expert keeps at least one replica."""
    return logcnt.clamp(min=1)


# EVOLVE-BLOCK-START
def peak_load(weight, logcnt):
    """Peak load per layer.

    Returns
    =======
    a tensor [n]
    """
    n, m = weight.shape
    load = weight / logcnt
    return load.max(dim=-1).values
# EVOLVE-BLOCK-END


def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):
    logcnt = clamp_counts(replicate(weight, num_replicas))
    return logcnt, peak_load(weight, logcnt)
