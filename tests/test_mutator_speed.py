"""Mutator moves toward faster programs: cost classes, the `speedup` operator, loop-free divisor tails."""
from __future__ import annotations

import pytest
import torch

from evaluator.mutations import CATALOGUE
from evolve.patch import evolve_blocks
from evolve.proposers.mutator import OfflineMutator, set_body
from tests.test_mutator import FAST, SEED, check_balancer, random_weight, request


def _impl(label: str, key: str):
    return next(i for i in CATALOGUE[label] if i.key == key)


def _with(code: str, label: str, key: str) -> str:
    return set_body(code, [b.label for b in evolve_blocks(code)].index(label), _impl(label, key).body)


def _counts(body: str, weight: torch.Tensor, num_phy: int) -> torch.Tensor:
    ns: dict = {"torch": torch}
    exec(compile("import torch\n" + body, "<block>", "exec"), ns)
    return ns["replicate_experts"](weight, num_phy)[2]


@pytest.mark.parametrize("key", ["sainte-lague-tail", "dhondt-tail"])
def test_loop_free_divisor_tail_gives_the_loops_counts(key: str) -> None:
    weight = random_weight(3, 16, 64) + torch.rand(16, 64, generator=torch.Generator().manual_seed(3))  # no ties
    for num_phy in (64, 72, 96, 160):
        loop = _counts(_impl("replication", key).body, weight, num_phy)
        fast = _counts(_impl("replication", key + "-topk").body, weight, num_phy)
        assert torch.equal(loop, fast)
        assert (fast.sum(-1) == num_phy).all()


def test_speedup_moves_each_block_to_a_cheaper_implementation() -> None:
    slow = _with(_with(_with(SEED, "replication", "greedy"), "packing", "lpt"), "policy", "best-of")
    code = slow
    costs = []
    mutator = OfflineMutator(catalogue=CATALOGUE, weights={"replace": 0, "perturb": 0, "crossover": 0, "replace2": 0})
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


def test_every_catalogue_entry_has_a_cost_class() -> None:
    assert all(impl.cost in (0, 1, 2) for impls in CATALOGUE.values() for impl in impls)
    for label in CATALOGUE:
        assert any(impl.cost == 0 for impl in CATALOGUE[label])  # a loop-free choice exists for every block
