"""The checkout's root: one definition for every module that looks for files shipped beside the code.

When the package runs from a checkout (or an editable install) this is the repository root; the
callers check for what they need there (a seed program, `pyproject.toml`) before relying on it.
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
