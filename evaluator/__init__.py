"""Everything EPLB: the balancer contract, traces, simulation, scoring and sandboxed execution.

`EVALUATOR_VERSION` stamps every score; bump it whenever a change could alter any number.
The Python API (`evaluator.api`) loads on first use: `from evaluator import evaluate_program, compare_programs`.
"""
from __future__ import annotations

import importlib
from typing import Any

# 1.1.0: imported traces and trace files are scored whole (split `all`), with their trailing partial window,
# and with the expert groups their import recorded (no longer 1 when the file states none); bundled datasets
# score their balance as in 1.0.0. Runtimes are now the harness's round-trip clock around each call, after
# one untimed warm-up call, and the reference is timed once per harness process (docs/sandbox.md).
# 1.2.0: a call's clock no longer covers encoding its window, and the worker sends log2phy cut after its widest
# expert, so a program that pads log2phy is no longer timed sending the padding (DeepSeek's algorithm: 4.1 MB a
# reply became 1.3 MB); the reference is timed before the first candidate of a process. Balance is unchanged.
EVALUATOR_VERSION = "1.2.0"
__all__ = ["EVALUATOR_VERSION", "evaluate_program", "compare_programs"]


def __getattr__(name: str) -> Any:
    if name in ("evaluate_program", "compare_programs"):
        # Imported on first use, after this package has finished initialising, so it cannot form an
        # import cycle even though evaluator.api imports modules that read this package's constants.
        return getattr(importlib.import_module("evaluator.api"), name)
    raise AttributeError(f"module 'evaluator' has no attribute '{name}'")
