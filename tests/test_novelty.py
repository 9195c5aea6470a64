"""Structural novelty: a renamed or re-commented program is no new program; a changed constant is."""
from __future__ import annotations

import random
from pathlib import Path

from evolve.config import Config
from evolve.selection import Member, Population, Settings, structure_digest

SEED = (Path(__file__).resolve().parents[1] / "candidates" / "seed.py").read_text()


def test_renaming_and_comments_keep_the_structure() -> None:
    renamed = SEED.replace("hottest", "peak_expert").replace("pack_load", "load_of_pack")
    commented = SEED.replace("    n, m = weight.shape\n", "    # shape of the input\n    n, m = weight.shape  # rows, experts\n\n", 1)
    redoc = SEED.replace('"""Row-wise inverse of a permutation: inv[perm[i]] = i."""', '"""Inverse, row by row."""')
    assert structure_digest(renamed) == structure_digest(SEED)
    assert structure_digest(commented) == structure_digest(SEED)
    assert structure_digest(redoc) == structure_digest(SEED)


def test_changed_code_changes_the_structure() -> None:
    assert structure_digest(SEED.replace("logcnt[rows, hottest] += 1", "logcnt[rows, hottest] += 2")) != structure_digest(SEED)
    assert structure_digest(SEED.replace("descending=True", "descending=False", 1)) != structure_digest(SEED)
    assert structure_digest("def f(:\n") is None


def test_population_rejects_a_renamed_child_only_with_structural_novelty() -> None:
    pop = Population(Settings(islands=2, elite_size=4))
    pop.add(0, Member("seed", (0.7,), 0.7, 0), SEED, 0)
    renamed = SEED.replace("hottest", "peak_expert")
    assert pop.near_duplicate(renamed, 0, ["seed"], 0, 1.0, structural=True) == ("seed", 1.0)
    assert pop.near_duplicate(renamed, 0, ["seed"], 0, 1.0, structural=False) is None
    assert pop.near_duplicate(renamed, 1, [], 0, 1.0, structural=True) is None  # another island never saw it
    tuned = SEED.replace("logcnt[rows, hottest] += 1", "logcnt[rows, hottest] += 2")
    assert pop.near_duplicate(tuned, 0, ["seed"], 0, 1.0, structural=True) is None
    pop.migrate(1, 5)  # the seed's shape travels with it
    assert pop.near_duplicate(renamed, 1, [], 5, 1.0, structural=True) == ("seed", 1.0)


def test_structural_novelty_is_on_by_default() -> None:
    assert Config().campaign.novelty_structural is True
