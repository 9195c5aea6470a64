"""evolve.syntax.parse: parsing from several threads at once never fails on a valid program.

The campaign loop parses in its proposer threads and its main thread at once; on some CPython releases
an unguarded `ast.parse` then fails now and then with `SystemError: AST constructor recursion depth
mismatch` (seen ending `make run`). Finalizers running Python code while trees are built make the
threads switch mid-parse, which is what exposes it.
"""
from __future__ import annotations

import ast
import sys
import threading
import time
from pathlib import Path

from evolve import syntax

PROGRAM = (Path(__file__).resolve().parents[1] / "candidates" / "hybrid_tail_swap.py").read_text()


class _Finalized:
    """Cyclic garbage whose finalizer runs Python code: collecting it lets another thread take over."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        time.sleep(0)


def _parse_in_threads(parse, threads: int = 4, rounds: int = 120) -> tuple[list[BaseException], int]:
    errors: list[BaseException] = []
    parsed = [0]

    def work() -> None:
        for _ in range(rounds):
            try:
                tree = parse(PROGRAM)
                parsed[0] += isinstance(tree, ast.Module)
            except SystemError as exc:
                errors.append(exc)
            for _ in range(50):
                _Finalized()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(old)
    return errors, parsed[0]


def test_parse_from_many_threads_at_once_never_fails():
    errors, parsed = _parse_in_threads(syntax.parse)
    assert errors == []
    assert parsed == 4 * 120


def test_parse_gives_the_same_tree_as_ast_parse():
    assert ast.dump(syntax.parse(PROGRAM)) == ast.dump(ast.parse(PROGRAM))
