"""A plain, loop-based re-implementation of the published EPLB evaluation, for checking ours against.

Written from the published definitions (the ADRS / OpenEvolve evaluator protocol), not from our
vectorised code, and deliberately simple:

- the trace file is read whole with `json.load`; its steps are summed into windows of 100, the last
  window holding whatever steps remain (it may be shorter);
- predictive: the balancer plans on window i and is scored on window i+1, for every i;
- an expert's load is split evenly over its replicas; each replica's share lands on the slots listed in
  `log2phy[layer, expert, :logcnt]`, accumulated in float32 as the published simulator does;
- a GPU's load is the sum of its R / G consecutive slots;
- balancedness of a set of bins = sum over layers of the mean bin load / sum over layers of the
  largest bin load; slots as bins give balancedness_expert, GPUs as bins balancedness_gpu;
- the overall figure is the mean over window pairs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

WINDOW = 100
NUM_REPLICAS, NUM_GROUPS, NUM_NODES, NUM_GPUS = 288, 8, 4, 32


def load_windows(path: Path, window: int = WINDOW) -> list[np.ndarray]:
    """Window sums `[layers, experts]` (int64, exact) of an expert-load.json; the last may be partial."""
    with open(path, encoding="utf-8") as fh:
        history = json.load(fh)["load_history"]
    out = []
    for start in range(0, len(history), window):
        steps = history[start:start + window]
        out.append(np.array([entry["logical_expert_load"] for entry in steps], dtype=np.int64).sum(axis=0))
    return out


def slot_loads(log2phy: np.ndarray, logcnt: np.ndarray, load: np.ndarray, num_replicas: int) -> list[np.ndarray]:
    """Per layer, the float32 load on each physical slot."""
    layers = []
    for layer in range(load.shape[0]):
        slots = np.zeros(num_replicas, dtype=np.float32)
        for expert in range(load.shape[1]):
            tokens = int(load[layer, expert])
            replicas = int(logcnt[layer, expert])
            if tokens <= 0 or replicas <= 0:
                continue
            share = tokens / replicas
            for j in range(replicas):
                slot = int(log2phy[layer, expert, j])
                slots[slot] = np.float32(slots[slot] + np.float32(share))
        layers.append(slots)
    return layers


def gpu_loads(slots_per_layer: list[np.ndarray], num_gpus: int) -> list[np.ndarray]:
    """Per layer, the float32 load on each GPU: the sum of its consecutive slots."""
    layers = []
    for slots in slots_per_layer:
        per_gpu = len(slots) // num_gpus
        gpus = np.zeros(num_gpus, dtype=np.float32)
        for gpu in range(num_gpus):
            total = np.float32(0)
            for slot in range(gpu * per_gpu, (gpu + 1) * per_gpu):
                total = np.float32(total + slots[slot])
            gpus[gpu] = total
        layers.append(gpus)
    return layers


def balancedness(bins_per_layer: list[np.ndarray]) -> float:
    """Sum over layers of the mean bin load over sum over layers of the largest bin load."""
    mean_sum, max_sum = np.float32(0), np.float32(0)
    for bins in bins_per_layer:
        total, largest = np.float32(0), np.float32(0)
        for value in bins:
            total = np.float32(total + value)
            largest = max(largest, value)
        mean_sum = np.float32(mean_sum + total / np.float32(len(bins)))
        max_sum = np.float32(max_sum + largest)
    return float(mean_sum) / float(max_sum) if max_sum > 0 else 0.0


def evaluate(
    rebalance: Callable, windows: list[np.ndarray], num_replicas: int = NUM_REPLICAS, num_groups: int = NUM_GROUPS,
    num_nodes: int = NUM_NODES, num_gpus: int = NUM_GPUS,
) -> dict[str, list[float]]:
    """Per window pair: plan on window i with `rebalance`, score slot and GPU balancedness on window i+1."""
    out: dict[str, list[float]] = {"balancedness_expert": [], "balancedness_gpu": []}
    for i in range(len(windows) - 1):
        _, log2phy, logcnt = rebalance(torch.from_numpy(windows[i]), num_replicas, num_groups, num_nodes, num_gpus)
        slots = slot_loads(np.asarray(log2phy), np.asarray(logcnt), windows[i + 1], num_replicas)
        out["balancedness_expert"].append(balancedness(slots))
        out["balancedness_gpu"].append(balancedness(gpu_loads(slots, num_gpus)))
    return out
