"""What a rebalance costs: expert weights copied between GPUs, and the serving time that copy takes.

Scores elsewhere treat a new placement as free. In a deployment, every physical slot whose logical
expert changed must receive that expert's weights (DeepSeek-V3: three 7168 x 2048 matrices, about 44 M
parameters, 44 MB in FP8, per layer), over links of tens of GB/s, while serving waits or slows. This
module counts, between consecutive plans, the slots whose expert changed and the bytes that must travel,
and charges the transfer time against the layer-time model of `evaluator.simulate` (the hottest GPU's
routed tokens per layer, summed over layers), so a plan that reshuffles every slot each window pays for
it. All of it is computed on the harness side from the placements the sandbox returned, in a few array
operations over windows, layers and slots.

The cost model, each constant configurable (defaults in `MigrationModel`, reasons in
docs/benchmark-realism.md):
* a changed slot needs no transfer when its new expert was already on the same GPU in the previous plan
  (a local copy); otherwise the expert's bytes travel to that GPU;
* GPUs receive in parallel, layers one after another: a rebalance takes the busiest GPU's incoming bytes
  divided by the per-GPU bandwidth;
* a routed token costs 2 x params_per_expert FLOPs on its GPU at an effective `gpu_tflops`, which turns
  the layer-time model's token counts into seconds;
* a plan is kept for `interval_steps` steps: its transfer time is spread over that many steps, so each
  scored window of `window` steps is charged transfer_time x window / interval_steps (interval 0: every
  window is a rebalance, as the benchmark's protocol plans one per window).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluator.simulate import Simulation
from evolve.errors import UserError

DEEPSEEK_V3_EXPERT_PARAMS = 3 * 7168 * 2048  # gate, up and down projections of one routed expert
# Routed-expert size of the bundled model shapes: (hidden size, expert intermediate size, bytes per
# parameter of the usual serving weights). An expert is three hidden x intermediate matrices.
EXPERT_SHAPES: dict[str, tuple[int, int, float]] = {
    "deepseek-v3": (7168, 2048, 1.0),  # FP8 weights
    "qwen3-30b-a3b": (2048, 768, 2.0),  # BF16
    "deepseek-v2-lite": (2048, 1408, 2.0),  # BF16
    "mixtral-8x7b": (4096, 14336, 2.0),  # BF16
}


@dataclass(frozen=True)
class MigrationModel:
    """The constants of the cost model (DeepSeek-V3 on H800-class GPUs by default; see `build_model`)."""

    params_per_expert: float = float(DEEPSEEK_V3_EXPERT_PARAMS)
    bytes_per_param: float = 1.0  # FP8 weights
    bandwidth_gbs: float = 50.0  # GB/s into one GPU (a 400 Gb/s InfiniBand NIC per GPU)
    gpu_tflops: float = 400.0  # effective FLOP rate of the routed experts' grouped GEMMs
    interval_steps: int = 0  # steps a plan is kept; 0: one rebalance per scored window

    @property
    def expert_bytes(self) -> float:
        return self.params_per_expert * self.bytes_per_param

    @property
    def token_seconds(self) -> float:
        """Seconds one routed token takes on its GPU in one layer."""
        return 2 * self.params_per_expert / (self.gpu_tflops * 1e12)


def build_model(params_per_expert: float, bytes_per_param: float, bandwidth_gbs: float, gpu_tflops: float,
                interval_steps: int, model_name: str = "") -> MigrationModel:
    """A checked cost model; 0 for params or bytes per parameter means: from the model shape `model_name`
    (DeepSeek-V3's when the shape is not one of EXPERT_SHAPES)."""
    for name, value in (("migration_params_per_expert", params_per_expert),
                        ("migration_bytes_per_param", bytes_per_param)):
        if not value >= 0:
            raise UserError(f"task option '{name}' must be 0 (from the model shape) or a positive number, got {value}")
    for name, value in (("migration_bandwidth_gbs", bandwidth_gbs), ("migration_gpu_tflops", gpu_tflops)):
        if not value > 0:
            raise UserError(f"task option '{name}' must be a positive number, got {value}")
    if interval_steps < 0:
        raise UserError(f"task option 'migration_interval_steps' must be 0 (every window) or a number of steps, "
                        f"got {interval_steps}")
    hidden, intermediate, width = EXPERT_SHAPES.get(model_name, EXPERT_SHAPES["deepseek-v3"])
    return MigrationModel(params_per_expert or float(3 * hidden * intermediate), bytes_per_param or width,
                          bandwidth_gbs, gpu_tflops, interval_steps)


@dataclass
class Migration:
    """Per scored window (the first has no previous plan, so it moves nothing)."""

    slots_changed: np.ndarray  # [W] slots whose logical expert changed, all layers
    slots_remote: np.ndarray  # [W] of those, slots whose expert was not on the same GPU before
    bytes_moved: np.ndarray  # [W] bytes received by all GPUs
    gpu_bytes_max: np.ndarray  # [W] bytes received by the busiest GPU
    transfer_s: np.ndarray  # [W] time of the rebalance before the window
    charge_s: np.ndarray  # [W] the share of transfer time charged to the window
    compute_s: np.ndarray  # [W] the layer-time model in seconds
    effective_balancedness: np.ndarray  # [W] mean GPU time / (hottest GPU time + charge)
    effective_speedup: float  # time without EPLB over time with it, transfers included (pooled)
    slots_total: int  # layers x physical slots
    expert_bytes: float  # the size of one expert in one layer, as the model assumed


def migration_cost(phy2log: np.ndarray, sim: Simulation, num_gpus: int, window: int,
                   model: MigrationModel = MigrationModel()) -> Migration:
    """Cost of moving from each plan `phy2log [W, L, R]` to the next, charged against `sim`'s windows."""
    plans = np.asarray(phy2log)
    num_windows, num_layers, num_slots = plans.shape
    per_gpu = num_slots // num_gpus
    if plans.size and 0 <= plans.min() and plans.max() < 1 << 15:
        plans = plans.astype(np.int16)  # expert ids (checked by the contract): a quarter of the bytes to compare

    slots_changed = np.zeros(num_windows, dtype=np.int64)
    remote_per_gpu = np.zeros((num_windows, num_gpus), dtype=np.int64)
    if num_windows > 1:
        # slot-of-GPU first: [per_gpu, W, L, G], so every comparison below runs over W*L*G contiguous ids
        # (with the GPU's slots last, numpy walked inner loops of per_gpu elements: five times slower)
        by_slot = np.ascontiguousarray(plans.reshape(num_windows, num_layers, num_gpus, per_gpu).transpose(3, 0, 1, 2))
        before, after = by_slot[:, :-1], by_slot[:, 1:]
        changed = after != before
        # a new slot's expert was already on its GPU when any of that GPU's previous slots held it
        already_there = after == before[0]
        for j in range(1, per_gpu):
            already_there |= after == before[j]
        remote = changed & ~already_there
        slots_changed[1:] = changed.sum(axis=0, dtype=np.int64).reshape(num_windows - 1, -1).sum(axis=1)
        remote_per_gpu[1:] = remote.sum(axis=0, dtype=np.int64).sum(axis=1)  # [W - 1, G]
    gpu_bytes_max = remote_per_gpu.max(axis=1) * model.expert_bytes
    transfer_s = gpu_bytes_max / (model.bandwidth_gbs * 1e9)
    interval = model.interval_steps or window
    charge_s = transfer_s * min(window / interval, 1.0)

    layer_time = sim.layer_time.double().cpu().numpy()
    mean_time = sim.mean_time.double().cpu().numpy()
    compute_s = layer_time * model.token_seconds
    charge_tokens = charge_s / model.token_seconds
    peak = layer_time + charge_tokens
    effective = np.where(peak > 0, mean_time / np.maximum(peak, 1e-300), 1.0)
    identity = float(sim.identity_time.double().sum())
    speedup = identity / max(float(peak.sum()), 1e-12)
    return Migration(
        slots_changed=slots_changed,
        slots_remote=remote_per_gpu.sum(axis=1),
        bytes_moved=remote_per_gpu.sum(axis=1) * model.expert_bytes,
        gpu_bytes_max=gpu_bytes_max,
        transfer_s=transfer_s,
        charge_s=charge_s,
        compute_s=compute_s,
        effective_balancedness=effective,
        effective_speedup=speedup,
        slots_total=num_layers * num_slots,
        expert_bytes=model.expert_bytes,
    )


def migration_metrics(m: Migration) -> dict[str, float]:
    """Summary metrics (means over rebalances: every scored window after the first)."""
    rebalances = max(m.slots_changed.size - 1, 1)
    per = slice(1, None)
    compute = float(m.compute_s.sum())
    return {
        "migration_slots_per_rebalance": float(m.slots_changed[per].sum()) / rebalances,
        "migration_slot_share": float(m.slots_changed[per].sum()) / rebalances / max(m.slots_total, 1),
        "migration_remote_slots_per_rebalance": float(m.slots_remote[per].sum()) / rebalances,
        "migration_bytes_per_rebalance": float(m.bytes_moved[per].sum()) / rebalances,
        "migration_gpu_bytes_max": float(m.gpu_bytes_max[per].sum()) / rebalances,
        "migration_time_s": float(m.transfer_s[per].sum()) / rebalances,
        "migration_overhead": float(m.charge_s.sum()) / max(compute, 1e-300),
        "balancedness_gpu_effective": float(m.effective_balancedness.mean()),
        "effective_speedup": m.effective_speedup,
        "migration_expert_bytes": m.expert_bytes,
    }


def migration_per_window(m: Migration, i: int) -> dict[str, float]:
    """The per-window figures that go beside the balancedness of window `i`."""
    return {
        "migration_slots": float(m.slots_changed[i]),
        "migration_bytes": float(m.bytes_moved[i]),
        "migration_charge_s": float(m.charge_s[i]),
        "balancedness_gpu_effective": float(m.effective_balancedness[i]),
    }
