"""Where the evaluator finds what ships with the checkout: one definition, imported everywhere."""
from evolve.paths import REPO_ROOT

DATASETS_DIR = REPO_ROOT / "datasets"
