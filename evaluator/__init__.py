"""Everything EPLB: the balancer contract, traces, simulation, scoring and sandboxed execution.

`EVALUATOR_VERSION` stamps every score; bump it whenever a change could alter any number.
The Python API (`evaluator.api`) loads on first use: `from evaluator import evaluate_program, compare_programs`.
"""
from __future__ import annotations

import importlib
from typing import Any

EVALUATOR_VERSION = "1.0.0"
__all__ = ["EVALUATOR_VERSION", "evaluate_program", "compare_programs"]


def __getattr__(name: str) -> Any:
    if name in ("evaluate_program", "compare_programs"):
        # Imported on first use, after this package has finished initialising, so it cannot form an
        # import cycle even though evaluator.api imports modules that read this package's constants.
        return getattr(importlib.import_module("evaluator.api"), name)
    raise AttributeError(f"module 'evaluator' has no attribute '{name}'")
