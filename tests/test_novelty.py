"""Structural novelty: a renamed or re-commented program is no new program; a changed constant is."""
from __future__ import annotations

import random
from pathlib import Path

from evolve.config import Config
from evolve.selection import Member, Population, Settings, structure_digest

SEED = (Path(__file__).resolve().parents[1] / "candidates" / "seed.py").read_text()


def test_renaming_and_comments_keep_the_structure() -> None:
    renamed = SEED.replace("hottest", "peak_expert").replace("pack_load", "load_of_pack")
    commented = SEED.replace("    n, m = weight.shape\n",
                             "    # shape of the input\n    n, m = weight.shape  # rows, experts\n\n", 1)
    redoc = SEED.replace('"""Row-wise inverse of a permutation: inv[perm[i]] = i."""', '"""Inverse, row by row."""')
    assert structure_digest(renamed) == structure_digest(SEED)
    assert structure_digest(commented) == structure_digest(SEED)
    assert structure_digest(redoc) == structure_digest(SEED)


def test_changed_code_changes_the_structure() -> None:
    changed = SEED.replace("logcnt[rows, hottest] += 1", "logcnt[rows, hottest] += 2")
    assert structure_digest(changed) != structure_digest(SEED)
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


def test_map_elites_keeps_the_best_program_of_each_cell() -> None:
    from evolve.selection import grid_cell

    widths = {"balance": 0.01, "speed": 1.0}
    pop = Population(Settings(islands=1, elite_size=2, grid=True))
    programs = [("slow-good", 0.815, 0, 0.815), ("fast-ok", 0.805, 2, 0.825), ("fast-better", 0.806, 2, 0.826),
                ("slow-worse", 0.812, 0, 0.812), ("mid", 0.79, 1, 0.80)]
    for order, (pid, balance, speed, primary) in enumerate(programs):
        cell = grid_cell({"balance": balance, "speed": speed}, widths)
        pop.add(0, Member(pid, (primary,), primary, order, cell=cell), f"x = {order}\n", order)
    ids = [m.id for m in pop.elites[0]]
    # one per cell, more than elite_size, best first; the better program of a shared cell wins
    assert ids == ["fast-better", "slow-good", "mid"]
    assert grid_cell({"balance": 0.8}, widths) is None
    parent = pop.draw_parent(0, random.Random(0))
    assert parent.id in ids


def test_map_elites_campaign_is_reproducible(tmp_path) -> None:
    from evolve import campaign_cli
    from tests.toy_task import fingerprint, toy_config

    prints = []
    for name in ("a", "b"):
        config = toy_config(tmp_path, name, max_evaluations=20, map_elites={"size": 1.0})
        campaign_cli.run_campaign(config, Path(config.campaign.out), False, holdout=False)
        prints.append(fingerprint(Path(config.campaign.out) / "archive.sqlite"))
    assert prints[0] == prints[1]
    islands = {}
    for island, pid, *_ in prints[0]["members"]:
        islands.setdefault(island, []).append(pid)
    assert max(len(v) for v in islands.values()) > 1
