"""A shipped candidate seen as a search target: its balance and speed octave under a task."""
from __future__ import annotations

from evaluator.paths import REPO_ROOT
from evaluator.scoring import speed_octaves
from evaluator.task import EplbTask
from evolve.errors import UserError


def target_of(task: EplbTask, candidate: str) -> tuple[float, int]:
    """(balancedness_gpu, speed octave) of `candidates/<candidate>.py` on the task's data."""
    path = REPO_ROOT / "candidates" / f"{candidate}.py"
    if not path.is_file():
        raise UserError(f"no candidate {path}; see candidates/")
    result = task.evaluate(path.read_text())
    if not result.correct:
        raise UserError(f"candidate {candidate} is incorrect on this task: {result.error}")
    return result.metrics["balancedness_gpu"], speed_octaves(result.metrics)
