"""Mutator moves toward faster programs: cost classes, the `speedup` operator, the `max_cost` cap, loop-free
replication, the direct global plan and the matched-pairs packing refinement.

Speed is shown by what a program does, never by a clock: the number of torch operations one call
dispatches (counted with a `TorchFunctionMode`), the size of the values a top-k scans, or the absence of
Python loops in the code. Each faster variant is also shown to give the same plan as the slower one (or,
for the refinement, a lower peak), so the speed costs nothing in balance.
"""
from __future__ import annotations

import ast
import re

import pytest
import torch
from torch.overrides import TorchFunctionMode

from evaluator.mutations import CATALOGUE
from evolve.patch import evolve_blocks
from evolve.proposers.mutator import MAX_COST, OfflineMutator, body_cost, set_body
from tests.test_mutator import FAST, SEED, WEIGHT, check_balancer, random_weight, request


def _impl(label: str, key: str):
    return next(i for i in CATALOGUE[label] if i.key == key)


def _with(code: str, label: str, key: str) -> str:
    return set_body(code, [b.label for b in evolve_blocks(code)].index(label), _impl(label, key).body)


def _namespace(code: str) -> dict:
    ns: dict = {}
    exec(compile(code, "<program>", "exec"), ns)
    return ns


def _counts(body: str, weight: torch.Tensor, num_phy: int) -> torch.Tensor:
    return _namespace("import torch\n" + body)["replicate_experts"](weight, num_phy)[2]


def _greedy_loop(weight: torch.Tensor, num_phy: int, offsets: list[float] | None = None) -> torch.Tensor:
    """Reference counts: one extra slot at a time to the highest w / (count + offset of that step)."""
    n, m = weight.shape
    counts = torch.ones(n, m, dtype=torch.int64)
    rows = torch.arange(n)
    for step in range(num_phy - m):
        offset = offsets[step] if offsets else 0.0
        counts[rows, (weight / (counts + offset)).argmax(-1)] += 1
    return counts


class _Ops(TorchFunctionMode):
    """Counts the torch operations dispatched inside it and remembers the largest top-k input."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.largest_topk = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += 1
        if getattr(func, "__name__", "") == "topk":
            self.largest_topk = max(self.largest_topk, args[0].numel())
        return func(*args, **(kwargs or {}))


NO_TIES = random_weight(3, 16, 64) + torch.rand(16, 64, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("key", ["sainte-lague-tail", "dhondt-tail"])
def test_loop_free_divisor_tail_gives_the_loops_counts(key: str) -> None:
    for num_phy in (64, 72, 96, 160):
        loop = _counts(_impl("replication", key).body, NO_TIES, num_phy)
        fast = _counts(_impl("replication", key + "-topk").body, NO_TIES, num_phy)
        assert torch.equal(loop, fast)
        assert (fast.sum(-1) == num_phy).all()


def test_loop_free_greedy_and_blend_give_the_greedy_loops_counts() -> None:
    share = float(re.search(r"^REP_BLEND = ([0-9.]+)", _impl("replication", "blend").body, re.M).group(1))
    blended = NO_TIES.double() + share * NO_TIES.double().mean(-1, keepdim=True)
    for num_phy in (64, 65, 96, 200):
        assert torch.equal(_counts(_impl("replication", "greedy-topk").body, NO_TIES, num_phy),
                           _greedy_loop(NO_TIES.double(), num_phy))
        assert torch.equal(_counts(_impl("replication", "blend").body, NO_TIES, num_phy),
                           _greedy_loop(blended, num_phy))


def test_loop_free_replication_scans_only_the_experts_that_can_win_a_slot() -> None:
    """The top-k runs over the `extra` best candidates' next `extra` priorities, not over every expert's."""
    noise = torch.rand(WEIGHT.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    weight, num_phy = WEIGHT.double() + noise, 288  # 58 layers x 256 experts (no ties), 32 extra slots
    extra = num_phy - weight.size(1)
    replicate = _namespace("import torch\n" + _impl("replication", "greedy-topk").body)["replicate_experts"]
    with _Ops() as ops:
        counts = replicate(weight, num_phy)[2]
    assert torch.equal(counts, _greedy_loop(weight, num_phy))
    assert ops.largest_topk <= weight.size(0) * max(weight.size(1), extra * extra)
    assert ops.largest_topk < weight.numel() * extra  # what a top-k over every expert's priorities scans


def _as_wrapper(code: str) -> str:
    """`code` with its global policy routed through rebalance_hierarchical with one group and one node."""
    old = "    return _global_plan(_planning_load(weight), num_replicas, num_gpus)"
    assert old in code
    return code.replace(old, "    return rebalance_hierarchical(_planning_load(weight), num_replicas, 1, 1, num_gpus)")


def test_global_policy_gives_the_wrappers_plan_in_fewer_operations() -> None:
    direct = _with(_with(_with(SEED, "replication", "greedy-topk"), "packing", "snake"), "policy", "global-smooth")
    wrapped = _as_wrapper(direct)
    counted = []
    plans = []
    for code in (direct, wrapped):
        rebalance = _namespace(code)["rebalance_experts"]
        with _Ops() as ops:
            plans.append(rebalance(WEIGHT.clone(), 288, 8, 4, 32))
        counted.append(ops.count)
    for a, b in zip(*plans):
        assert torch.equal(a, b)
    assert counted[0] < counted[1]
    check_balancer(direct)


def _peaks(pack: str, weight: torch.Tensor, num_packs: int) -> torch.Tensor:
    index, rank = _namespace("import torch\n" + _impl("packing", pack).body)["balanced_packing"](weight, num_packs)
    cap = weight.size(1) // num_packs
    slots = index * cap + rank  # every (pack, rank) exactly once: a valid packing
    assert torch.equal(slots.sort(-1).values, torch.arange(weight.size(1)).expand_as(slots))
    return torch.zeros(weight.size(0), num_packs, dtype=torch.float64).scatter_add_(1, index, weight).amax(-1)


def test_matched_pairs_refinement_lowers_the_peak_pack() -> None:
    weight = random_weight(5, 40, 288).double() + 1.0
    snake, pairs = _peaks("snake", weight, 32), _peaks("snake+pairs", weight, 32)
    assert (pairs <= snake + 1e-9).all()  # a pair swaps only when its larger load falls
    assert (pairs < snake - 1e-9).float().mean() > 0.5  # and on most rows it finds such a swap


def test_snake_ranks_come_without_a_pass_over_the_packs() -> None:
    """Plain snake gives each item its round as rank: fewer operations than snake followed by a refinement
    that rebuilds the ranks from the packs' contents (zero rounds of it)."""
    weight = random_weight(6, 58, 288).double()
    plain = _namespace("import torch\n" + _impl("packing", "snake").body)["balanced_packing"]
    refined_code = _impl("packing", "snake+pairs").body.replace("PACK_PAIR_ROUNDS = 2", "PACK_PAIR_ROUNDS = 0")
    refined = _namespace("import torch\n" + refined_code)["balanced_packing"]
    with _Ops() as fast:
        a = plain(weight, 32)
    with _Ops() as slow:
        b = refined(weight, 32)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert fast.count < slow.count


def test_cost_classes_match_the_code() -> None:
    """Class 0 means no Python loop in the entry; an entry with a loop is class 1 or 2."""
    for impls in CATALOGUE.values():
        for impl in impls:
            assert impl.cost in (0, 1, 2)
            has_loop = body_cost(impl.body) > 0
            assert (impl.cost > 0) == has_loop or impl.key.startswith("best-of"), impl.key  # best-of plans twice
    for label in CATALOGUE:
        assert any(impl.cost == 0 for impl in CATALOGUE[label])  # a loop-free choice exists for every block


def test_default_mutator_keeps_every_child_loop_free() -> None:
    """Operators draw only loop-free entries, and the seed's own loops go in its first child."""
    mutator = OfflineMutator(catalogue=CATALOGUE)
    for label, impls in mutator.catalogue.items():
        assert impls and all(impl.cost == 0 for impl in impls), label
    code, archive = SEED, [SEED]
    for seed in range(40):
        proposal = mutator.propose(request(code, seed=seed, inspirations=archive[-3:]))
        assert proposal.ok, proposal.error
        if seed == 0:  # the seed's replication and packing loops are swapped in the same edit
            assert set(proposal.extra["capped"]) | set(proposal.extra["blocks"]) >= {"replication", "packing"}
            assert "within cost class 0" in proposal.description or not proposal.extra["capped"]
        code = proposal.child_code
        archive.append(code)
        for block in evolve_blocks(code):
            assert body_cost(block.body) == 0 and mutator.cost(block) == 0, (proposal.name, block.label)
    check_balancer(code, FAST)


def test_the_cap_swaps_a_slow_block_an_operator_left_alone() -> None:
    """A parent with a slow packing block (LPT, a loop over items): a child that edits only the policy
    still comes out with loop-free packing."""
    parent = _with(_with(SEED, "replication", "greedy-topk"), "packing", "lpt")
    mutator = OfflineMutator(catalogue=CATALOGUE, weights={"replace": 1, "perturb": 0, "crossover": 0, "replace2": 0,
                                                          "speedup": 0})
    for seed in range(12):
        proposal = mutator.propose(request(parent, seed=seed))
        assert proposal.ok, proposal.error
        packing = next(b for b in evolve_blocks(proposal.child_code) if b.label == "packing")
        assert body_cost(packing.body) == 0
        if "packing" not in proposal.extra["blocks"]:
            assert proposal.extra["capped"] == ["packing"] and "'snake'" in proposal.description
        check_balancer(proposal.child_code, FAST)


def test_max_cost_widens_the_catalogue_and_is_checked() -> None:
    from evolve.errors import UserError

    sizes = [sum(len(v) for v in OfflineMutator(catalogue=CATALOGUE, max_cost=c).catalogue.values())
             for c in range(MAX_COST + 1)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] == sum(len(v) for v in CATALOGUE.values())
    assert OfflineMutator.from_options({"max_cost": 2}).max_cost == 2
    for bad in (-1, 3, 1.5, "1", True):
        with pytest.raises(UserError, match="max_cost"):
            OfflineMutator(catalogue=CATALOGUE, max_cost=bad)


def test_speedup_moves_each_block_to_a_cheaper_implementation() -> None:
    slow = _with(_with(_with(SEED, "replication", "greedy"), "packing", "lpt"), "policy", "best-of")
    code = slow
    costs = []
    mutator = OfflineMutator(catalogue=CATALOGUE, max_cost=MAX_COST,
                             weights={"replace": 0, "perturb": 0, "crossover": 0, "replace2": 0})
    for seed in range(6):
        proposal = mutator.propose(request(code, seed=seed))
        if not proposal.ok:
            break
        assert proposal.extra["operator"] == "speedup"
        code = proposal.child_code
        check_balancer(code, FAST)
        costs.append(sum(next((i.cost for i in CATALOGUE[b.label] if i.body == b.body), 9)
                         for b in evolve_blocks(code)))
    assert costs and costs == sorted(costs, reverse=True) and costs[-1] == 0  # ends with no Python loop at all
    assert "no operator applies" in mutator.propose(request(code, seed=99)).error  # nothing cheaper is left


def test_speedup_replaces_the_seeds_own_loops() -> None:
    """The seed's blocks are not catalogue entries; the ones with a Python loop count as the highest class,
    so `speedup` swaps them for loop-free entries until no block of the program has a loop."""
    mutator = OfflineMutator(catalogue=CATALOGUE, weights={"replace": 0, "perturb": 0, "crossover": 0, "replace2": 0})
    code, loops = SEED, []
    for seed in range(4):
        loops.append(sum(isinstance(node, (ast.For, ast.While)) for b in evolve_blocks(code)
                         for node in ast.walk(ast.parse(b.body))))
        proposal = mutator.propose(request(code, seed=seed))
        if not proposal.ok:
            break
        code = proposal.child_code
        check_balancer(code, FAST)
    assert loops[0] == 2 and loops[-1] == 0  # the seed's slot loop and item loop are gone
    assert all(body_cost(b.body) == 0 for b in evolve_blocks(code))
