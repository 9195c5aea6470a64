"""The example in examples/sine is a complete problem for evolve: its task scores honestly, and a short
campaign on it through the public command line finds children better than the seed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from evolve import open_archive
from evolve.loading import load_object
from evolve.task import Task

ROOT = Path(__file__).resolve().parents[1]
FACTORY = "examples/sine/task.py:make_task"
SEED = ROOT / "examples" / "sine" / "seed.py"


def make(**options):
    return load_object(f"{ROOT / FACTORY}", what="task.factory")(options)


def test_the_example_task_implements_the_interface_and_scores_deterministically():
    task = make()
    assert isinstance(task, Task)
    seed = task.evaluate(SEED.read_text())
    assert seed.correct, seed.error
    assert abs(seed.metrics["max_error"] - (3.141592653589793 / 2 - 1)) < 1e-12  # worst at pi/2: x - sin x
    assert task.evaluate(SEED.read_text()).scores == seed.scores
    better = SEED.read_text().replace("C3 = 0.0 ", "C3 = -0.1666 ")
    assert task.evaluate(better).scores["digits"] > seed.scores["digits"] + 0.5
    holdout = task.holdout()
    assert holdout.stamp()["dataset"]["sha256"] != task.stamp()["dataset"]["sha256"]


def test_the_example_task_rejects_bad_programs_with_one_line():
    task = make(timeout_s=5)
    cases = {
        "import math\ndef approximate(x):\n    return math.sin(x)\n": "imports are not allowed",
        "def approximate(x):\n    return float('nan')\n": "finite number",
        "def approximate(x):\n    return 1 / 0\n": "ZeroDivisionError",
        "def approximate(x:\n": "does not parse",
        "def approximate(x):\n    while True:\n        pass\n": "longer than",
    }
    for code, expected in cases.items():
        result = task.evaluate(code)
        assert not result.correct and expected in result.error and "\n" not in result.error, (code, result.error)


def test_a_short_campaign_on_the_example_improves_on_its_seed(tmp_path):
    out = tmp_path / "sine-run"
    proc = subprocess.run(  # no seed_program given: the task declares its own (examples/sine/seed.py)
        [sys.executable, "-m", "evolve.cli", "run", "--set", f"task.factory={FACTORY}", "--max-evaluations", "24",
         "--max-minutes", "0", "--workers", "1", "--seed", "3", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"seed program: {SEED}" in proc.stdout
    assert "holdout: best" in proc.stdout  # the closing check on the points the search never saw
    report = subprocess.run([sys.executable, "-m", "evolve.cli", "report", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr
    assert (out / "report" / "report.html").is_file() and (out / "report" / "progress.png").is_file()
    assert "sine" in (out / "report" / "report.html").read_text()
    frames = open_archive(out)
    seed = frames.programs[frames.programs["parent_id"].isna()]
    children = frames.programs[frames.programs["parent_id"].notna()]
    assert len(seed) == 1 and len(children) >= 10
    assert (children["score"] > seed["score"].iloc[0]).sum() >= 1
    assert frames.lineage["change"].max() > 0
    assert frames.versions["score"].is_monotonic_increasing and len(frames.versions) >= 2
