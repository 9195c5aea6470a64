"""Archive: content addressing, ordered steps, versioned best, integrity, schema migration, plain reading."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from evolve.archive import SCHEMA_VERSION, Archive, Event, ProgramRecord, Step, program_id
from evolve.errors import UserError
from evolve.task import Result

SEED = "def solve():\n    return [0.0]\n"
CHILD = "def solve():\n    return [1.0]\n"


def ok(score: float) -> Result:
    return Result(correct=True, metrics={"size": 1.0}, scores={"score": score}, scorer="score",
                  evaluator_version="t-1", dataset={"name": "toy", "split": "search", "sha256": "ab"},
                  per_window=[{"window": 1.0, "x": 0.5}], feedback="fine")


def seeded(tmp_path: Path) -> tuple[Archive, str, str]:
    archive = Archive(tmp_path / "archive.sqlite")
    seed, child = program_id(SEED), program_id(CHILD)
    archive.put_program(ProgramRecord(id=seed, code=SEED, patch_name="seed"), ok(1.0))
    archive.apply_step(Step(idx=0, kind="seed", program_id=seed), version=(seed, 1.0),
                       members=[(0, seed, "seed")], events=[Event("new_best", seed)])
    record = ProgramRecord(id=child, code=CHILD, parent_id=seed, generation=1, patch_name="raise it",
                           patch_description="one up", proposer="toy", cost=0.25)
    archive.put_program(record, ok(2.0))
    archive.apply_step(Step(idx=1, kind="evaluated", program_id=child, parent_id=seed, cost=0.25),
                       lineage=record, version=(child, 2.0), members=[(0, child, "birth")])
    return archive, seed, child


def test_content_addressed_and_round_trip(tmp_path: Path):
    archive, seed, child = seeded(tmp_path)
    archive.put_program(ProgramRecord(id=seed, code=SEED, patch_name="again"), ok(5.0))  # same code: no new row
    assert archive.conn.execute("SELECT COUNT(*) FROM programs").fetchone()[0] == 2
    assert archive.program(seed).patch_name == "seed"
    result = archive.result(child)
    assert result is not None and result.score == 2.0 and result.per_window == [{"window": 1.0, "x": 0.5}]
    assert result.dataset["sha256"] == "ab" and result.evaluator_version == "t-1"
    assert [s.kind for s in archive.steps()] == ["seed", "evaluated"]
    assert [v["version"] for v in archive.versions()] == [1, 2]
    assert archive.resolve(child[:8]) == child
    assert [r.id for r, _ in archive.lineage(child)] == [seed, child]
    assert archive.check_integrity() == []
    with pytest.raises(UserError, match="no program"):
        archive.resolve("zzzz")


def test_best_versions_are_exported_once_with_a_header(tmp_path: Path):
    archive, seed, child = seeded(tmp_path)
    written = archive.export_versions(tmp_path)
    assert [p.name for p in written] == ["v001_seed.py", "v002_raise_it.py"]
    text = (tmp_path / "best" / "v002_raise_it.py").read_text()
    assert text.startswith("# best program, version 2") and child in text and "lineage" in text
    assert text.endswith(CHILD)
    assert archive.export_versions(tmp_path) == []  # idempotent
    assert archive.versions()[1]["path"] == "best/v002_raise_it.py"


def test_integrity_check_finds_each_kind_of_damage(tmp_path: Path):
    archive, seed, child = seeded(tmp_path)
    c = archive.conn
    c.execute("UPDATE programs SET code = 'tampered' WHERE id = ?", (child,))
    c.execute("INSERT INTO programs (id, code, parent_id, created_at) VALUES (?, ?, 'ghost', 0)",
              (program_id("x = 1\n"), "x = 1\n"))
    c.execute("UPDATE versions SET score = 0.5 WHERE version = 2")
    c.execute("INSERT INTO steps (idx, kind, applied_at) VALUES (5, 'failed', 0)")
    problems = "\n".join(archive.check_integrity())
    assert "is not the sha256 of its code" in problems
    assert "parent ghost is not in the archive" in problems
    assert "stored without a result" in problems
    assert "does not improve" in problems
    assert "not contiguous" in problems


def test_events_and_meta(tmp_path: Path):
    archive, seed, _ = seeded(tmp_path)
    archive.set_meta(seed=7, config={"campaign": {"seed": 7}})
    assert archive.meta("seed") == 7 and archive.meta("missing", "d") == "d"
    archive.add_event(Event("migration", seed, {"moves": [[seed, 0, 1]]}), idx=1)
    assert [e["kind"] for e in archive.events()] == ["new_best", "migration"]
    assert archive.events("migration")[0]["detail"]["moves"] == [[seed, 0, 1]]


def test_plain_tools_can_read_it(tmp_path: Path):
    seeded(tmp_path)
    conn = sqlite3.connect(tmp_path / "archive.sqlite")
    frame = pd.read_sql("SELECT p.id, p.parent_id, p.patch_name, r.score, r.metrics FROM programs p "
                        "JOIN results r ON r.program_id = p.id ORDER BY r.score", conn)
    assert list(frame["score"]) == [1.0, 2.0]
    assert json.loads(frame["metrics"][0]) == {"size": 1.0}


# The version-1 schema, frozen as it shipped: the migration test builds an archive with it by hand.
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE programs (id TEXT PRIMARY KEY, code TEXT NOT NULL, parent_id TEXT, inspirations TEXT NOT NULL DEFAULT '[]',
    island INTEGER NOT NULL DEFAULT 0, generation INTEGER NOT NULL DEFAULT 0, patch_name TEXT NOT NULL DEFAULT '',
    patch_description TEXT NOT NULL DEFAULT '', patch_diff TEXT NOT NULL DEFAULT '', proposer TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '', tokens_in INTEGER NOT NULL DEFAULT 0, tokens_out INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0, created_at REAL NOT NULL);
CREATE TABLE results (program_id TEXT PRIMARY KEY REFERENCES programs(id), correct INTEGER NOT NULL,
    error TEXT NOT NULL DEFAULT '', score REAL, metrics TEXT NOT NULL DEFAULT '{}', scores TEXT NOT NULL DEFAULT '{}',
    feedback TEXT NOT NULL DEFAULT '', evaluator_version TEXT NOT NULL DEFAULT '', dataset_id TEXT NOT NULL DEFAULT '',
    dataset_sha256 TEXT NOT NULL DEFAULT '', scorer TEXT NOT NULL DEFAULT '', evaluated_at REAL NOT NULL);
CREATE TABLE steps (idx INTEGER PRIMARY KEY, kind TEXT NOT NULL, program_id TEXT, parent_id TEXT,
    island INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', proposer TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '', tokens_in INTEGER NOT NULL DEFAULT 0, tokens_out INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0, seed INTEGER, applied_at REAL NOT NULL);
CREATE TABLE versions (version INTEGER PRIMARY KEY, program_id TEXT NOT NULL, score REAL NOT NULL,
    idx INTEGER NOT NULL, path TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL);
PRAGMA user_version = 1;
"""


def test_a_version_1_archive_opens_and_migrates(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    seed = program_id(SEED)
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_SCHEMA)
        conn.execute("INSERT INTO programs (id, code, created_at) VALUES (?, ?, 0)", (seed, SEED))
        conn.execute("INSERT INTO results (program_id, correct, score, scores, scorer, evaluated_at) "
                     "VALUES (?, 1, 1.0, ?, 'score', 0)",
                     (seed, json.dumps({"score": 1.0})))
        conn.execute("INSERT INTO steps (idx, kind, program_id, applied_at) VALUES (0, 'seed', ?, 0)", (seed,))
        conn.execute("INSERT INTO versions VALUES (1, ?, 1.0, 0, '', 0)", (seed,))
    archive = Archive(path)
    assert archive.schema_version == SCHEMA_VERSION
    assert archive.result(seed).per_window == [] and archive.result(seed).score == 1.0
    members = [tuple(r) for r in archive.conn.execute("SELECT island, program_id, via FROM members")]
    assert members == [(0, seed, "birth")]
    assert archive.check_integrity() == []
    archive.add_event(Event("run_resumed"))  # the tables version 2 added are usable
    archive.close()
    assert Archive(path).schema_version == SCHEMA_VERSION  # opening again is a no-op


def test_a_newer_archive_is_refused(tmp_path: Path):
    path = tmp_path / "future.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(UserError, match="newer than this eplb-evolve"):
        Archive(path)
    (tmp_path / "junk.sqlite").write_text("this is not a database, not at all" * 100)
    with pytest.raises(UserError, match="not a readable archive"):
        Archive(tmp_path / "junk.sqlite")


def test_one_spend_record_travels_from_proposal_to_program_and_step(tmp_path: Path):
    """Proposal, ProgramRecord and Step share the Spend fields, which the archive keeps as its old columns."""
    from evolve.proposers.base import Proposal
    from evolve.spend import SPEND_FIELDS, Spend

    assert SPEND_FIELDS == ("proposer", "model", "tokens_in", "tokens_out", "cost")
    proposal = Proposal(child_code=CHILD, proposer="llm", model="m-1", tokens_in=120, tokens_out=30, cost=0.5)
    assert all(isinstance(x, Spend) for x in (proposal, ProgramRecord(id="a", code=""), Step(idx=0, kind="seed")))
    assert proposal.spend() == Spend(proposer="llm", model="m-1", tokens_in=120, tokens_out=30, cost=0.5)
    assert proposal.spend().tokens == 150
    archive = Archive(tmp_path / "archive.sqlite")
    pid = program_id(CHILD)
    archive.put_program(ProgramRecord(id=pid, code=CHILD, **proposal.spend_fields()), ok(1.0))
    archive.apply_step(Step(7, "evaluated", pid, **proposal.spend_fields()))  # positional fields stay first
    assert archive.program(pid).spend() == proposal.spend()
    assert archive.steps()[0].spend() == proposal.spend() and archive.steps()[0].idx == 7
    row = archive.conn.execute("SELECT proposer, model, tokens_in, tokens_out, cost FROM steps").fetchone()
    assert tuple(row) == ("llm", "m-1", 120, 30, 0.5)  # the same columns as before the shared record
