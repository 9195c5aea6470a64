"""The offline mutator: every catalogue entry and operator gives a valid balancer, deterministically."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluator.contract import validate_placement
from evaluator.mutations import CATALOGUE
from evolve.patch import evolve_blocks, parse_patch
from evolve.proposers.base import ProgramView, ProposalRequest
from evolve.proposers.mutator import MAX_COST, OPERATORS, OfflineMutator, find_params, set_body

REPO = Path(__file__).resolve().parents[1]
SEED = (REPO / "candidates" / "seed.py").read_text()
README_WEIGHT = torch.tensor(
    [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86], [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]],
    dtype=torch.float64,
)
ENTRIES = [impl for impls in CATALOGUE.values() for impl in impls]


def random_weight(seed: int = 0, layers: int = 58, experts: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(layers, experts, generator=g) ** 3 * 1000).round()


WEIGHT = random_weight()
SHAPES = [  # weight, R, groups, nodes, gpus
    (WEIGHT, 288, 8, 4, 32),  # DeepSeek-V3 shape, hierarchical
    (README_WEIGHT, 16, 4, 2, 8),  # the README example
    (random_weight(1, 3, 60), 64, 5, 2, 8),  # groups do not divide over nodes: the global path
    (torch.zeros(2, 16, dtype=torch.float64), 32, 4, 2, 8),  # no load at all
]
FAST = [(WEIGHT[:6], 288, 8, 4, 32), SHAPES[1]]  # the same paths on fewer layers, for the many-variant tests


def check_balancer(code: str, shapes=SHAPES) -> None:
    """Load the program in-process and check the contract on every shape."""
    namespace: dict = {}
    exec(compile(code, "<child>", "exec"), namespace)
    for weight, r, groups, nodes, gpus in shapes:
        out = namespace["rebalance_experts"](weight.clone(), r, groups, nodes, gpus)
        phy2log, log2phy, logcnt = (t.numpy() for t in out)
        problem = validate_placement(phy2log, log2phy, logcnt, weight.shape[0], weight.shape[1], r, weight.numpy())
        assert problem == "", f"{problem} (R={r}, groups={groups}, nodes={nodes}, gpus={gpus})"


def request(code: str = SEED, seed: int = 0, inspirations: list[str] = ()) -> ProposalRequest:
    return ProposalRequest(
        parent=ProgramView("parent", code),
        inspirations=[ProgramView(f"insp{i}", c) for i, c in enumerate(inspirations)],
        seed=seed,
    )


def only(op: str, max_cost: int = MAX_COST) -> OfflineMutator:
    """A mutator with one operator, over the whole catalogue unless `max_cost` says otherwise."""
    return OfflineMutator(catalogue=CATALOGUE, weights={o: (1.0 if o == op else 0.0) for o in OPERATORS},
                          max_cost=max_cost)


def test_seed_is_a_valid_balancer():
    check_balancer(SEED)


@pytest.mark.parametrize("impl", ENTRIES, ids=[f"{i.label}:{i.key}" for i in ENTRIES])
def test_every_catalogue_entry_gives_a_valid_balancer(impl):
    index = [b.label for b in evolve_blocks(SEED)].index(impl.label)
    check_balancer(set_body(SEED, index, impl.body))


@pytest.mark.parametrize(
    "impl", [i for i in ENTRIES if i.params], ids=[f"{i.label}:{i.key}" for i in ENTRIES if i.params]
)
def test_catalogue_parameters_at_their_bounds_stay_valid(impl):
    index = [b.label for b in evolve_blocks(SEED)].index(impl.label)
    params = find_params(evolve_blocks(set_body(SEED, index, impl.body)))
    assert {p.name for p in params} == set(impl.params)
    for param in params:
        assert param.lo is not None and param.hi is not None, f"{param.name} has no range"
        for bound in (param.lo, param.hi):
            value = str(int(bound)) if "." not in param.value else repr(float(bound))
            lines = impl.body.split("\n")
            lines[param.line] = lines[param.line].replace(f"= {param.value}", f"= {value}", 1)
            check_balancer(set_body(SEED, index, "\n".join(lines)), FAST)


def test_entries_define_the_block_contract():
    public = {"replication": "replicate_experts", "packing": "balanced_packing", "policy": "plan_placement"}
    for impl in ENTRIES:
        assert f"def {public[impl.label]}(" in impl.body
        assert impl.body.endswith("\n") and "EVOLVE-BLOCK" not in impl.body


@pytest.mark.parametrize("op", ["replace", "replace2"])
def test_replace_operators_on_the_seed(op):
    for seed in range(4):
        proposal = only(op).propose(request(seed=seed))
        assert proposal.ok, proposal.error
        assert proposal.extra["operator"] == op
        assert len(proposal.extra["blocks"]) == (2 if op == "replace2" else 1)
        patch = parse_patch(proposal.patch_text)
        assert patch.name == proposal.name and patch.blocks
        check_balancer(proposal.child_code, FAST)


def test_perturb_changes_one_constant_within_its_range():
    base = only("replace").propose(request(seed=0)).child_code
    parent = base
    for impl in (CATALOGUE["packing"][1], CATALOGUE["replication"][3]):  # entries with constants
        index = [b.label for b in evolve_blocks(parent)].index(impl.label)
        parent = set_body(parent, index, impl.body)
    before = {p.name: p for p in find_params(evolve_blocks(parent))}
    for seed in range(6):
        proposal = only("perturb").propose(request(parent, seed=seed))
        assert proposal.ok, proposal.error
        after = {p.name: p for p in find_params(evolve_blocks(proposal.child_code))}
        changed = [n for n in before if before[n].value != after[n].value]
        assert len(changed) == 1
        p = after[changed[0]]
        assert p.lo <= float(p.value) <= p.hi
        check_balancer(proposal.child_code, FAST)


def test_perturb_does_not_apply_to_a_parent_without_constants():
    proposal = only("perturb").propose(request(SEED))
    assert not proposal.ok and "no operator applies" in proposal.error


def test_crossover_takes_a_block_from_an_inspiration():
    ldm = next(i for i in CATALOGUE["packing"] if i.key == "ldm")
    donor = set_body(SEED, 1, ldm.body)
    proposal = only("crossover").propose(request(SEED, seed=3, inspirations=[donor]))
    assert proposal.ok, proposal.error
    assert evolve_blocks(proposal.child_code)[1].body == ldm.body
    assert proposal.child_code == donor
    check_balancer(proposal.child_code)


def test_crossover_skips_blocks_with_other_functions():
    other = (REPO / "candidates" / "greedy_snake.py")
    if not other.exists():
        pytest.skip("candidates/greedy_snake.py not present")
    proposal = only("crossover").propose(request(SEED, inspirations=[other.read_text()]))
    assert not proposal.ok  # its blocks define replica_counts / snake_slots, which the seed's frame never calls


def test_same_request_gives_identical_patch_text():
    for seed in range(8):
        inspirations = [set_body(SEED, 2, ENTRIES[-1].body)]
        first = OfflineMutator(catalogue=CATALOGUE).propose(request(seed=seed, inspirations=inspirations))
        second = OfflineMutator(catalogue=CATALOGUE).propose(request(seed=seed, inspirations=inspirations))
        assert first.patch_text == second.patch_text and first.child_code == second.child_code
    texts = {OfflineMutator(catalogue=CATALOGUE).propose(request(seed=s)).patch_text for s in range(8)}
    assert len(texts) > 3


@pytest.mark.parametrize("chain_seed", range(3))
def test_chains_of_five_mutations_stay_valid(chain_seed):
    code, archive, used = SEED, [SEED], []
    for step in range(5):
        proposal = OfflineMutator(catalogue=CATALOGUE).propose(
            request(code, seed=1000 * chain_seed + step, inspirations=archive[-3:]))
        assert proposal.ok, f"step {step}: {proposal.error}"
        used.append(proposal.extra["operator"])
        code = proposal.child_code
        archive.append(code)
        check_balancer(code, FAST)
    check_balancer(code)


def test_operators_are_all_reachable():
    seen = set()
    code, archive = SEED, [SEED]
    for seed in itertools.count():
        proposal = OfflineMutator(catalogue=CATALOGUE).propose(request(code, seed=seed, inspirations=archive[-2:]))
        seen.add(proposal.extra.get("operator"))
        if proposal.ok:
            code = proposal.child_code
            archive.append(code)
        if seen >= set(OPERATORS) or seed > 60:
            break
    assert seen >= set(OPERATORS)


def test_unknown_operator_is_a_user_error():
    from evolve.errors import UserError

    with pytest.raises(UserError, match="unknown mutator operator"):
        OfflineMutator(catalogue=CATALOGUE, weights={"explode": 1.0})
    with pytest.raises(UserError, match="unknown mutator option"):
        OfflineMutator.from_options({"colour": "red"})


def test_catalogue_matches_the_seed_on_the_readme_example():
    """The seed-like entries (greedy, LPT, hierarchical) balance the README example as well as the seed does."""
    def peak(code: str) -> float:
        ns: dict = {}
        exec(code, ns)
        phy2log, _, logcnt = ns["rebalance_experts"](README_WEIGHT, 16, 4, 2, 8)
        slot = README_WEIGHT.gather(-1, phy2log) / logcnt.gather(-1, phy2log)
        return float(slot.view(2, 8, -1).sum(-1).max(-1).values.sum())

    code = SEED
    for label, key in (("replication", "greedy"), ("packing", "lpt"), ("policy", "hierarchical")):
        impl = next(i for i in CATALOGUE[label] if i.key == key)
        code = set_body(code, [b.label for b in evolve_blocks(code)].index(label), impl.body)
    assert peak(code) == pytest.approx(peak(SEED))
    assert np.isfinite(peak(code))
