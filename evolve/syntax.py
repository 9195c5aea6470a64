"""Python source to a syntax tree, safe to call from several threads at once.

Some CPython releases (3.11.7 among them) keep one counter per interpreter while turning a parsed
program into tree objects, so two threads parsing at the same moment can fail with `SystemError: AST
constructor recursion depth mismatch`. The campaign loop parses in its proposer threads (the mutator,
patch fences) and in its main thread (structural novelty), so every parse in evolve goes through one lock.
"""
from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse(source: str) -> ast.Module:
    """`ast.parse(source)`, one thread at a time; raises SyntaxError or ValueError as ast.parse does."""
    with _LOCK:
        return ast.parse(source)
