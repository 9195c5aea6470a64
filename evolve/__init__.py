"""The search: campaign loop, archive, selection, patches and proposers.

Nothing in this package knows about EPLB; it talks to a problem through `evolve.task.Task`.

The Python API (`evolve.api`) is importable from here; it loads on first use, so `import evolve` stays light:

    from evolve import run_campaign, resume_campaign, open_archive
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["run_campaign", "resume_campaign", "open_archive", "load_config"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        # Imported on first use, after this package has finished initialising, so it cannot form an
        # import cycle even though evolve.api imports modules that read this package's constants.
        return getattr(importlib.import_module("evolve.api"), name)
    raise AttributeError(f"module 'evolve' has no attribute '{name}'")
