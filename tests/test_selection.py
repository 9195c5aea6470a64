"""Selection: Pareto ranks, elites, parent draws, inspirations, migration and novelty."""
from __future__ import annotations

import difflib
import random

from hypothesis import given
from hypothesis import strategies as st

from evolve.selection import (
    Member,
    Population,
    Settings,
    crowding,
    dominates,
    fitness,
    half_octave,
    normalise,
    pareto_ranks,
    similarity,
)
from evolve.task import Objective, Result

PROGRAM = '''"""Module docstring."""
import math


def solve(x):
    """Docstring."""
    y = math.sqrt(x)  # a comment
    return [y, 2 * y, "text".upper()]
'''


def member(pid: str, *values: float, order: int = 0) -> Member:
    return Member(pid, tuple(values), primary=values[0], order=order)


def population(islands: int = 1, elite_size: int = 4, pareto: bool = False, **kw) -> Population:
    return Population(Settings(islands=islands, elite_size=elite_size, pareto=pareto, **kw))


def test_pareto_ranks_and_crowding():
    points = [(3, 1), (1, 3), (2, 2), (1, 1), (0, 0), (2, 0.5)]
    assert pareto_ranks(points) == [0, 0, 0, 1, 2, 1]
    distance = crowding([(3, 1), (2, 2), (1, 3)])
    assert distance[0] == distance[2] == float("inf") and 0 < distance[1] < float("inf")


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=12))
def test_pareto_ranks_are_a_layered_sort(points):
    ranks = pareto_ranks(points)
    for i, p in enumerate(points):
        assert not any(dominates(q, p) for j, q in enumerate(points) if ranks[j] >= ranks[i])
        if ranks[i] > 0:
            assert any(dominates(q, p) for j, q in enumerate(points) if ranks[j] == ranks[i] - 1)


def test_pareto_elites_are_kept_front_by_front():
    pop = population(elite_size=3, pareto=True)
    for i, values in enumerate([(1, 1), (3, 0), (0, 3), (2, 2), (0.5, 0.5)]):
        pop.add(0, member(f"p{i}", *values, order=i), f"x = {i}\n", i)
    assert {m.id for m in pop.elites[0]} == {"p1", "p2", "p3"}  # the non-dominated front
    assert [m.id for m in pop.elites[0]][0] == "p1"  # ordered by the primary objective inside a front
    single = population(elite_size=2)
    for i, score in enumerate([1.0, 3.0, 3.0, 2.0]):
        single.add(0, member(f"s{i}", score, order=i), f"x = {i}\n", i)
    assert [m.id for m in single.elites[0]] == ["s1", "s2"]  # ties go to the earlier program
    assert single.best.id == "s1"


def test_noisy_objectives_are_bucketed_to_half_octaves():
    assert half_octave(1.3e-3) == half_octave(1.4e-3) != half_octave(2.0e-3)
    assert half_octave(-1.3e-3) == -half_octave(1.3e-3) and half_octave(0.0) == 0.0
    objectives = [Objective("score"), Objective("runtime_s", maximise=False, deterministic=False)]
    a = Result(correct=True, scores={"score": 1.0}, metrics={"runtime_s": 1.30e-3}, scorer="score")
    b = Result(correct=True, scores={"score": 1.0}, metrics={"runtime_s": 1.38e-3}, scorer="score")
    assert fitness(a, objectives) == fitness(b, objectives)
    assert fitness(a, objectives, bucket_noisy=False) != fitness(b, objectives, bucket_noisy=False)
    assert fitness(Result(correct=False, error="x"), objectives) is None
    noisy_primary = [Objective("runtime_s", maximise=False, deterministic=False)]
    assert fitness(a, noisy_primary) != fitness(b, noisy_primary)  # a primary score is never rounded


def test_parent_draws_are_seeded_and_penalise_busy_parents():
    pop = population(elite_size=4)
    for i, score in enumerate([4.0, 3.0, 2.0, 1.0]):
        pop.add(0, member(f"p{i}", score, order=i), f"x = {i}\n", i)
    draws = [pop.draw_parent(0, random.Random(s)).id for s in range(300)]
    assert draws == [pop.draw_parent(0, random.Random(s)).id for s in range(300)]
    assert draws.count("p0") > draws.count("p1") > draws.count("p3")  # rank weights 1, 1/2, 1/3, 1/4
    pop.children["p0"] = 50
    busy = [pop.draw_parent(0, random.Random(s)).id for s in range(300)]
    assert busy.count("p0") < draws.count("p0") / 4
    greedy = population(elite_size=4, strategy="greedy")
    for i, m in enumerate(pop.elites[0]):
        greedy.add(0, m, f"x = {i}\n", i)
    assert {greedy.draw_parent(0, random.Random(s)).id for s in range(20)} == {"p0"}


def test_inspirations_start_with_the_best_and_skip_the_parent():
    pop = population(islands=2, elite_size=4)
    codes = ["a = 1\nb = 2\nc = 3\n", "a = 1\nb = 2\nc = 4\n", "z = 9\ny = 8\n", "q = 0\n"]
    for i, code in enumerate(codes):
        pop.add(i % 2, member(f"p{i}", 10.0 - i, order=i), code, i)
    parent = pop.elites[1][0]  # p1
    chosen = pop.inspirations(parent, 3, random.Random(0))
    assert chosen[0].id == "p0" and parent.id not in {m.id for m in chosen}
    assert chosen[1].id in {"p2", "p3"}  # the least similar to the parent come next
    assert pop.inspirations(parent, 0, random.Random(0)) == []


def test_ring_migration_moves_elites_to_the_next_island():
    pop = population(islands=3, elite_size=2)
    for island in range(3):
        pop.add(island, member(f"best{island}", 10.0 + island, order=island), f"x = {island}\n", island)
        pop.add(island, member(f"low{island}", 1.0, order=3 + island), f"y = {island}\n", 3 + island)
    moves = pop.migrate(1, step=10)
    assert sorted(moves) == [("best0", 0, 1), ("best1", 1, 2), ("best2", 2, 0)]
    assert [m.id for m in pop.elites[1]] == ["best1", "best0"]
    assert pop.migrate(1, step=20) == [("best2", 0, 1)]  # programs already on the next island stay put
    assert population(islands=1).migrate(1, step=5) == []


def test_normalise_drops_comments_docstrings_and_spacing_but_not_structure():
    norm = normalise(PROGRAM)
    assert "comment" not in norm and "Docstring" not in norm and '"text"' in norm
    assert normalise(PROGRAM.replace("y = math.sqrt(x)", "y=math.sqrt( x )")) == norm
    moved = PROGRAM.replace("    return [y", "\n\nreturn_value = 0\n    return [y")
    assert normalise(moved) != norm
    dedented = "if a:\n    b()\nc()\n"
    assert normalise(dedented) != normalise("if a:\n    b()\n    c()\n")
    assert normalise("def f(:\n") == "def f(:"  # broken code still normalises (by lines)


def test_similarity_is_difflibs_ratio_where_it_matters():
    a = normalise(PROGRAM)
    b = normalise(PROGRAM.replace("2 * y", "3 * y"))
    exact = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
    assert abs(similarity(a, b) - exact) < 1e-9
    assert similarity(a, a) == 1.0
    far = normalise("def other():\n    return 1\n")
    assert similarity(a, far, floor=0.9) < 0.9


def test_near_duplicates_are_found_on_the_island_as_it_stood():
    pop = population(islands=2, elite_size=4)
    pop.add(0, member("p0", 1.0, order=0), PROGRAM, 0)
    against = [m.id for m in pop.elites[0]]
    reworded = PROGRAM.replace("# a comment", "# another comment")
    assert pop.near_duplicate(reworded, 0, against, upto_step=0, threshold=1.0) == ("p0", 1.0)
    assert pop.near_duplicate(reworded, 1, [], upto_step=0, threshold=1.0) is None  # other island
    tweaked = PROGRAM.replace("2 * y", "3 * y")
    assert pop.near_duplicate(tweaked, 0, against, upto_step=0, threshold=1.0) is None
    near = pop.near_duplicate(tweaked, 0, against, upto_step=0, threshold=0.95)
    assert near is not None and near[0] == "p0" and 0.95 <= near[1] < 1.0
    pop.add(1, member("late", 0.5, order=9), PROGRAM, 9)  # arrives on island 1 at step 9
    assert pop.near_duplicate(reworded, 1, [], upto_step=5, threshold=1.0) is None
    assert pop.near_duplicate(reworded, 1, [], upto_step=9, threshold=1.0) is not None
