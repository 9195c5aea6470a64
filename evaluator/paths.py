"""Where the evaluator finds what ships with the checkout: one definition, imported everywhere."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS_DIR = REPO_ROOT / "datasets"
