"""The patch corpus: tricky and malformed replies, each applied exactly or rejected for the right reason.

Every case lives in tests/patch_corpus/ (see its README). Running this file directly prints a table.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from evolve.patch import ERROR_KINDS, PatchError, apply_patch

CORPUS = Path(__file__).resolve().parent / "patch_corpus"
CASES = sorted((CORPUS / "cases").glob("*.txt"))


@dataclass
class Outcome:
    ok: bool
    why: str


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def load(path: Path) -> tuple[dict, str, str]:
    """(expectation, parent text, reply text) of one case."""
    raw = path.read_bytes().decode("utf-8")
    header, _, reply = raw.partition("\n")
    spec = json.loads(header)
    parent = (CORPUS / "parents" / spec["parent"]).read_bytes().decode("utf-8")
    if spec.get("crlf") == "reply":
        reply = _crlf(reply)
    if spec.get("crlf") == "parent":
        parent = _crlf(parent)
    return spec, parent, reply


def check(path: Path) -> Outcome:
    """Run one case and say whether the outcome is exactly the expected one, and if not, why."""
    spec, parent, reply = load(path)
    try:
        child = apply_patch(parent, reply)
    except PatchError as exc:
        return _check_rejected(spec, exc)
    if spec["expect"] != "applied":
        return Outcome(False, f"applied, expected {spec['kind']!r}; notes={child.notes}")
    if "child" in spec:
        want = (CORPUS / "expected" / spec["child"]).read_bytes().decode("utf-8")
        if spec.get("crlf") == "parent":
            want = _crlf(want)
        if child.code != want:
            return Outcome(False, "child differs from expected/" + spec["child"])
    if "name" in spec and child.name != spec["name"]:
        return Outcome(False, f"name {child.name!r}")
    if "description" in spec and not child.description.startswith(spec["description"]):
        return Outcome(False, f"description {child.description!r}")
    missing = [n for n in spec.get("notes", []) if not any(n in note for note in child.notes)]
    if missing:
        return Outcome(False, f"notes {child.notes} lack {missing}")
    if spec.get("no_notes") and child.notes:
        return Outcome(False, f"unexpected notes {child.notes}")
    if not child.diff.startswith("--- parent"):
        return Outcome(False, "no diff")
    return Outcome(True, "applied")


def _check_rejected(spec: dict, exc: PatchError) -> Outcome:
    message = str(exc)
    if spec["expect"] != "rejected":
        return Outcome(False, f"rejected: {exc.kind}: {message}")
    if exc.kind != spec["kind"] or exc.kind not in ERROR_KINDS:
        return Outcome(False, f"kind {exc.kind!r}, expected {spec['kind']!r}: {message}")
    if "\n" in message:
        return Outcome(False, "message is not one line")
    missing = [w for w in spec.get("words", []) if w not in message]
    if missing:
        return Outcome(False, f"message lacks {missing}: {message}")
    missing = [w for w in spec.get("detail", []) if w not in exc.feedback()]
    if missing:
        return Outcome(False, f"feedback lacks {missing}: {exc.feedback()}")
    if "block" in spec and exc.block != spec["block"]:
        return Outcome(False, f"block {exc.block}, expected {spec['block']}")
    if "blocks" in spec and [e.block for e in exc.errors] != spec["blocks"]:
        return Outcome(False, f"blocks {[e.block for e in exc.errors]}, expected {spec['blocks']}")
    return Outcome(True, f"rejected: {exc.kind}")


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path) -> None:
    outcome = check(path)
    assert outcome.ok, outcome.why


def test_corpus_share() -> None:
    """At least 30 cases, covering both outcomes; print the share handled exactly as expected."""
    outcomes = {path.stem: check(path) for path in CASES}
    applied = sum(1 for o in outcomes.values() if o.ok and o.why == "applied")
    rejected = sum(1 for o in outcomes.values() if o.ok and o.why.startswith("rejected"))
    print(
        f"patch corpus: {applied + rejected}/{len(outcomes)} as expected "
        f"({applied} applied, {rejected} rejected for the right reason)"
    )
    assert len(outcomes) >= 30
    assert applied >= 10 and rejected >= 10
    assert applied + rejected == len(outcomes), {k: o.why for k, o in outcomes.items() if not o.ok}


if __name__ == "__main__":
    results = {path.stem: check(path) for path in CASES}
    for stem, outcome in results.items():
        print(f"{'ok ' if outcome.ok else 'BAD'} {stem:40s} {outcome.why}")
    good = sum(o.ok for o in results.values())
    print(f"{good}/{len(results)} ({good / len(results):.0%}) applied or rejected as expected")
