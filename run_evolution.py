#!/usr/bin/env python3
"""Run a search campaign with the defaults, then write its report: what `make run` does.

Same as `eplb-evolve run` followed by `eplb-evolve report RUN` (any `run` flag works here too, e.g.
`--max-minutes 10` or `--proposer llm --model NAME`; the defaults live in `evolve/config.py`). At the end
it prints where the archive, the best program, its lineage and `report.html` are, and, on each split the
search never saw, the best against the seed and the shipped candidates: balance, time per call and speed
against the reference, the paired interval of best minus the most balanced shipped candidate, and a
verdict line (docs/search.md, "The best against the shipped candidates").
"""
import sys
import time

from evolve.cli import main


def run_dir_of(argv: list[str]) -> tuple[list[str], str]:
    """The run directory the campaign will use, naming one when the user did not."""
    for flag in ("--out", "--resume"):
        if flag in argv[:-1]:
            return argv, argv[argv.index(flag) + 1]
        given = next((a for a in argv if a.startswith(flag + "=")), None)
        if given:
            return argv, given.split("=", 1)[1]
    out = f"results/{time.strftime('%Y%m%d-%H%M%S')}"
    return [*argv, "--out", out], out


if __name__ == "__main__":
    args, out = run_dir_of(sys.argv[1:])
    status = main(["run", *args])
    if status == 0 and "--print-config" not in args and "-h" not in args and "--help" not in args:
        status = main(["report", out])
    sys.exit(status)
