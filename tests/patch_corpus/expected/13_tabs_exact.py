"""A balancer indented with tabs."""
import torch


def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):
	n, m = weight.shape
	logcnt = torch.ones(n, m, dtype=torch.int64)
	for _ in range(m, num_replicas):
		per_replica = weight / logcnt
		hottest = per_replica.max(dim=-1).indices
		logcnt[torch.arange(n), hottest] += 1
	return logcnt
