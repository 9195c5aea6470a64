"""A balancer.

Example:
```python
rebalance_experts(w, 8, 1, 1, 2)
```
"""
import torch


def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):
    n, m = weight.shape
    logcnt = torch.ones(n, m, dtype=torch.int64)
    rows = torch.arange(n)
    for _ in range(m, num_replicas):
        hottest = (weight / logcnt).max(dim=-1).indices
        logcnt[rows, hottest] += 1
    return logcnt
