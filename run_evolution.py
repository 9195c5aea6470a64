#!/usr/bin/env python3
"""Run a search campaign with the defaults: the offline mutator on the bundled dataset, a few minutes.

Same as `eplb-evolve run` (any of its flags work here too, e.g. `--max-minutes 10` or
`--proposer llm --model NAME`); the defaults live in `evolve/config.py`. At the end it prints where the
archive, the best program and its lineage are, and how the best compares with the seed on the
holdout split.
"""
import sys

from evolve.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
