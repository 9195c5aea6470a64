"""The campaign archive: one SQLite file (WAL mode) holding every program, result, step and event.

Programs are content-addressed (id = sha256 of the code), so identical code is one program and is
evaluated once. `steps` is the ordered log of proposal outcomes (index 0 is the seed); replaying it
rebuilds the search state exactly, which is how `--resume` works. Each step is written in one
transaction, so a crash loses at most work that was still in flight. The schema carries a version
(`PRAGMA user_version`) and migrations, so an older archive opens and upgrades in place.

Every text but a program's code is scrubbed of the environment's secrets (`evolve.scrub`) when it is
written and again when it is read, so neither a leak nor an archive written elsewhere shows one.
"""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from evolve.errors import UserError
from evolve.scrub import scrub, scrub_data, scrub_result
from evolve.spend import Spend
from evolve.task import Result

SCHEMA_VERSION = 2
STEP_KINDS = ("seed", "evaluated", "duplicate", "rejected", "failed")

# Migration i takes an archive from schema version i to i + 1. A new archive runs all of them.
MIGRATIONS = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE programs (
        id TEXT PRIMARY KEY, code TEXT NOT NULL, parent_id TEXT, inspirations TEXT NOT NULL DEFAULT '[]',
        island INTEGER NOT NULL DEFAULT 0, generation INTEGER NOT NULL DEFAULT 0,
        patch_name TEXT NOT NULL DEFAULT '', patch_description TEXT NOT NULL DEFAULT '',
        patch_diff TEXT NOT NULL DEFAULT '', proposer TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '',
        tokens_in INTEGER NOT NULL DEFAULT 0, tokens_out INTEGER NOT NULL DEFAULT 0,
        cost REAL NOT NULL DEFAULT 0, created_at REAL NOT NULL);
    CREATE TABLE results (
        program_id TEXT PRIMARY KEY REFERENCES programs(id), correct INTEGER NOT NULL,
        error TEXT NOT NULL DEFAULT '', score REAL, metrics TEXT NOT NULL DEFAULT '{}',
        scores TEXT NOT NULL DEFAULT '{}', feedback TEXT NOT NULL DEFAULT '',
        evaluator_version TEXT NOT NULL DEFAULT '', dataset_id TEXT NOT NULL DEFAULT '',
        dataset_sha256 TEXT NOT NULL DEFAULT '', scorer TEXT NOT NULL DEFAULT '', evaluated_at REAL NOT NULL);
    CREATE TABLE steps (
        idx INTEGER PRIMARY KEY, kind TEXT NOT NULL, program_id TEXT, parent_id TEXT,
        island INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', proposer TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '', tokens_in INTEGER NOT NULL DEFAULT 0,
        tokens_out INTEGER NOT NULL DEFAULT 0, cost REAL NOT NULL DEFAULT 0, seed INTEGER, applied_at REAL NOT NULL);
    CREATE TABLE versions (
        version INTEGER PRIMARY KEY, program_id TEXT NOT NULL, score REAL NOT NULL, idx INTEGER NOT NULL,
        path TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL);
    """,
    """
    ALTER TABLE results ADD COLUMN per_window TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE results ADD COLUMN dataset TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE results ADD COLUMN stdout TEXT NOT NULL DEFAULT '';
    ALTER TABLE results ADD COLUMN stderr TEXT NOT NULL DEFAULT '';
    ALTER TABLE steps ADD COLUMN detail TEXT NOT NULL DEFAULT '{}';
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, idx INTEGER, kind TEXT NOT NULL, program_id TEXT,
        detail TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL);
    CREATE TABLE members (
        island INTEGER NOT NULL, program_id TEXT NOT NULL, idx INTEGER NOT NULL, via TEXT NOT NULL,
        PRIMARY KEY (island, program_id));
    INSERT OR IGNORE INTO members
        SELECT s.island, s.program_id, s.idx, 'birth' FROM steps s JOIN results r ON r.program_id = s.program_id
        WHERE s.kind IN ('seed', 'evaluated') AND r.correct = 1;
    CREATE INDEX programs_parent ON programs(parent_id);
    CREATE INDEX events_kind ON events(kind);
    """,
]

# Indexes for readers (the web view's table, genealogy and default sort); no schema change, so they are
# made on any open, also of an older archive.
READ_INDEXES = """
CREATE INDEX IF NOT EXISTS programs_listing ON programs(id, parent_id, island, generation, proposer, model, created_at);
CREATE INDEX IF NOT EXISTS results_listing ON results(program_id, correct, score);
CREATE INDEX IF NOT EXISTS results_score ON results(score);
"""


def program_id(code: str) -> str:
    """The content address of a program."""
    return hashlib.sha256(code.encode()).hexdigest()


@dataclass
class ProgramRecord(Spend):
    """A program's code and lineage, as stored, with the spend of the proposal that made it."""

    id: str
    code: str
    parent_id: str | None = None
    inspirations: list[str] = field(default_factory=list)
    island: int = 0
    generation: int = 0
    patch_name: str = ""
    patch_description: str = ""
    patch_diff: str = ""
    created_at: float = 0.0


@dataclass
class Step(Spend):
    """The outcome of one proposal index: what came of it, and what it cost (the shared `Spend` fields)."""

    idx: int
    kind: str  # one of STEP_KINDS
    program_id: str | None = None
    parent_id: str | None = None
    island: int = 0
    error: str = ""
    seed: int | None = None  # the proposal's derived seed: with the campaign seed, all the RNG state there is
    detail: dict[str, Any] = field(default_factory=dict)
    applied_at: float = 0.0


@dataclass
class Event:
    kind: str  # proposal_failed, evaluation_timeout, duplicate, rejected, migration, new_best, run_*, holdout
    program_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


_PROGRAM_COLS = [f for f in ProgramRecord.__dataclass_fields__]
_STEP_COLS = [f for f in Step.__dataclass_fields__]
# Texts a proposer wrote, scrubbed of secrets on the way in and out. The code is left alone: it is the
# program's identity (its id is the sha256 of the code), and it never holds what a program printed.
_PROGRAM_TEXT = ("patch_name", "patch_description", "patch_diff", "proposer", "model")


def damaged(path: Path, exc: Exception) -> UserError:
    """The one line for an archive SQLite cannot read: a garbled file or a corrupted page."""
    return UserError(f"{path} is not a readable archive ({exc}): restore the file from a copy (`sqlite3 {path} "
                     ".recover` may salvage its programs) or start a new run with --out")


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    return str(getattr(exc, "sqlite_errorname", "")).startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


@contextmanager
def _guard(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if _is_damage(exc):
            raise damaged(path, exc) from None
        raise


class _GuardedCursor(sqlite3.Cursor):
    """A cursor whose reads turn a corrupted page, met at any row, into `damaged`'s one line."""

    path: Path

    def execute(self, *args: Any) -> "_GuardedCursor":
        with _guard(self.path):
            return super().execute(*args)

    def executemany(self, *args: Any) -> "_GuardedCursor":
        with _guard(self.path):
            return super().executemany(*args)

    def fetchone(self) -> Any:
        with _guard(self.path):
            return super().fetchone()

    def fetchall(self) -> list[Any]:
        with _guard(self.path):
            return super().fetchall()

    def __next__(self) -> Any:
        with _guard(self.path):
            return super().__next__()


class _GuardedConnection(sqlite3.Connection):
    """`execute` and friends through `_GuardedCursor`, so every query of the archive is guarded."""

    path: Path

    def _cursor(self) -> _GuardedCursor:
        cursor = self.cursor(_GuardedCursor)
        cursor.path = self.path
        return cursor

    def execute(self, *args: Any) -> _GuardedCursor:  # type: ignore[override]
        return self._cursor().execute(*args)

    def executemany(self, *args: Any) -> _GuardedCursor:  # type: ignore[override]
        return self._cursor().executemany(*args)

    def executescript(self, script: str) -> Any:  # type: ignore[override]
        with _guard(self.path):
            return super().executescript(script)


class Archive:
    """Reads and writes one archive file. Single writer: the campaign loop's thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, factory=_GuardedConnection)
            self.conn.path = self.path
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise damaged(self.path, exc) from None

    # ---- schema ------------------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise UserError(
                f"{self.path} has archive schema v{version}, newer than this eplb-evolve (v{SCHEMA_VERSION}); upgrade "
                "eplb-evolve"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            script = MIGRATIONS[target - 1]
            self.conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;")
        self.conn.executescript(READ_INDEXES)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    # ---- meta --------------------------------------------------------------------------------------
    def set_meta(self, **values: Any) -> None:
        with self._tx() as c:
            self._put_meta(c, values)

    @staticmethod
    def _put_meta(c: sqlite3.Connection, values: dict[str, Any]) -> None:
        c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                      [(k, json.dumps(scrub_data(v))) for k, v in values.items()])

    def meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # ---- programs and results --------------------------------------------------------------------
    def put_program(self, record: ProgramRecord, result: Result) -> None:
        """Store an evaluated program at once (before its step is applied), so a crash keeps the work."""
        with self._tx() as c:
            self._insert_program(c, record, result)

    def _insert_program(self, c: sqlite3.Connection, record: ProgramRecord, result: Result) -> None:
        values = _program_values(record)
        result = scrub_result(result)
        c.execute(f"INSERT OR IGNORE INTO programs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                  list(values.values()))
        dataset = result.dataset or {}
        dataset_id = ":".join(str(dataset[k]) for k in ("name", "split") if dataset.get(k))
        row = {
            "program_id": record.id, "correct": int(result.correct), "error": result.error, "score": result.score,
            "metrics": json.dumps(result.metrics), "scores": json.dumps(result.scores),
            "per_window": json.dumps(result.per_window), "feedback": result.feedback,
            "evaluator_version": result.evaluator_version, "dataset_id": dataset_id,
            "dataset_sha256": str(dataset.get("sha256", "")), "dataset": json.dumps(dataset),
            "scorer": result.scorer, "stdout": result.stdout, "stderr": result.stderr, "evaluated_at": time.time(),
        }
        c.execute(f"INSERT OR IGNORE INTO results ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                  list(row.values()))

    def program_ids(self) -> list[str]:
        """Every program, oldest first."""
        return [row[0] for row in self.conn.execute("SELECT id FROM programs ORDER BY created_at, id")]

    def has_program(self, pid: str) -> bool:
        return self.conn.execute("SELECT 1 FROM programs WHERE id = ?", (pid,)).fetchone() is not None

    def program(self, pid: str) -> ProgramRecord:
        row = self.conn.execute("SELECT * FROM programs WHERE id = ?", (pid,)).fetchone()
        if row is None:
            raise UserError(f"no program {pid[:12]} in {self.path}; list programs with `eplb-evolve show RUN`")
        data = {k: row[k] for k in _PROGRAM_COLS}
        data["inspirations"] = json.loads(data["inspirations"])
        for key in _PROGRAM_TEXT:
            data[key] = scrub(data[key])
        return ProgramRecord(**data)

    def result(self, pid: str) -> Result | None:
        row = self.conn.execute("SELECT * FROM results WHERE program_id = ?", (pid,)).fetchone()
        if row is None:
            return None
        return scrub_result(Result(
            correct=bool(row["correct"]), error=row["error"], metrics=json.loads(row["metrics"]),
            scores=json.loads(row["scores"]), per_window=json.loads(row["per_window"]), feedback=row["feedback"],
            evaluator_version=row["evaluator_version"], dataset=json.loads(row["dataset"]), scorer=row["scorer"],
            stdout=row["stdout"], stderr=row["stderr"],
        ))

    def resolve(self, prefix: str) -> str:
        """A full program id from a unique prefix (as printed by `show`)."""
        rows = self.conn.execute("SELECT id FROM programs WHERE id LIKE ? LIMIT 2", (prefix + "%",)).fetchall()
        if not rows:
            raise UserError(f"no program with id starting '{prefix}' in {self.path}; list its programs with "
                            "`eplb-evolve show RUN` (ids are hexadecimal)")
        if len(rows) > 1:
            raise UserError(f"more than one program with id starting '{prefix}' in {self.path}; give more of the id")
        return rows[0][0]

    # ---- steps -----------------------------------------------------------------------------------
    def apply_step(
        self,
        step: Step,
        lineage: ProgramRecord | None = None,
        events: Sequence[Event] = (),
        members: Sequence[tuple[int, str, str]] = (),
        version: tuple[str, float] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int | None:
        """Write one proposal's outcome and everything it changed in one transaction.

        `lineage` rewrites the child's lineage fields when this step is the first to adopt it (a program
        stored before a crash may be adopted by the resumed run). Returns the new version number, if any.
        """
        step.applied_at = step.applied_at or time.time()
        new_version = None
        with self._tx() as c:
            if lineage is not None:
                values = _program_values(lineage)
                for key in ("id", "code", "created_at"):
                    values.pop(key)
                c.execute(f"UPDATE programs SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                          [*values.values(), lineage.id])
            row = {k: getattr(step, k) for k in _STEP_COLS}
            row["error"] = scrub(step.error)
            row["detail"] = json.dumps(scrub_data(step.detail))
            c.execute(f"INSERT INTO steps ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
            for event in events:
                self._insert_event(c, step.idx, event)
            c.executemany("INSERT OR IGNORE INTO members VALUES (?, ?, ?, ?)",
                          [(island, pid, step.idx, via) for island, pid, via in members])
            if version is not None:
                new_version = 1 + (c.execute("SELECT COALESCE(MAX(version), 0) FROM versions").fetchone()[0])
                c.execute("INSERT INTO versions VALUES (?, ?, ?, ?, '', ?)",
                          (new_version, version[0], version[1], step.idx, time.time()))
            if meta:
                self._put_meta(c, meta)
        return new_version

    def steps(self) -> list[Step]:
        rows = self.conn.execute("SELECT * FROM steps ORDER BY idx").fetchall()
        return [Step(**{**{k: r[k] for k in _STEP_COLS}, "error": scrub(r["error"]),
                        "detail": scrub_data(json.loads(r["detail"]))}) for r in rows]

    def add_event(self, event: Event, idx: int | None = None) -> None:
        with self._tx() as c:
            self._insert_event(c, idx, event)

    @staticmethod
    def _insert_event(c: sqlite3.Connection, idx: int | None, event: Event) -> None:
        c.execute("INSERT INTO events (idx, kind, program_id, detail, created_at) VALUES (?, ?, ?, ?, ?)",
                  (idx, event.kind, event.program_id, json.dumps(scrub_data(event.detail)), time.time()))

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM events" + (" WHERE kind = ?" if kind else "") + " ORDER BY id"
        rows = self.conn.execute(query, (kind,) if kind else ()).fetchall()
        return [{**dict(r), "detail": scrub_data(json.loads(r["detail"]))} for r in rows]

    # ---- versions of the best program ------------------------------------------------------------
    def versions(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM versions ORDER BY version")]

    def export_versions(self, run_dir: Path) -> list[Path]:
        """Write `best/vNNN_<name>.py` for every version that lacks its file (idempotent after a crash)."""
        written = []
        for v in self.versions():
            program = self.program(v["program_id"])
            name = re.sub(r"[^A-Za-z0-9_]+", "_", program.patch_name or "seed").strip("_")[:60] or "program"
            rel = Path("best") / f"v{v['version']:03d}_{name}.py"
            path = run_dir / rel
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(self._version_header(v, program) + program.code)
                tmp.replace(path)
                written.append(path)
            if v["path"] != str(rel):
                with self._tx() as c:
                    c.execute("UPDATE versions SET path = ? WHERE version = ?", (str(rel), v["version"]))
        return written

    def _version_header(self, version: dict[str, Any], program: ProgramRecord) -> str:
        result = self.result(program.id) or Result(correct=False)
        metrics = ", ".join(f"{k}={v:.6g}" for k, v in sorted(result.metrics.items())[:16]
                            if isinstance(v, (int, float)))
        chain = " -> ".join(f"{r.id[:10]} {r.patch_name or 'seed'}" for r, _ in self.lineage(program.id))
        lines = [
            f"best program, version {version['version']} (found at step {version['idx']})",
            f"program {program.id}",
            f"score {version['score']:.6g} (primary objective); scorer {result.scorer or '-'}; "
            f"evaluator {result.evaluator_version or '-'}; dataset {json.dumps(result.dataset)}",
            f"metrics: {metrics}",
            f"lineage, seed first: {chain}",
        ]
        return "".join(f"# {line}\n" for line in lines) + "\n"

    # ---- lineage and integrity -------------------------------------------------------------------
    def lineage(self, pid: str) -> list[tuple[ProgramRecord, Result | None]]:
        """The chain of programs from the root (the seed) down to `pid`."""
        chain: list[tuple[ProgramRecord, Result | None]] = []
        seen: set[str] = set()
        current: str | None = pid
        while current and current not in seen and self.has_program(current):
            seen.add(current)
            record = self.program(current)
            chain.append((record, self.result(current)))
            current = record.parent_id
        return list(reversed(chain))

    def check_integrity(self) -> list[str]:
        """Every rule an archive must keep; returns one line per violation (empty: healthy)."""
        problems: list[str] = []
        q = self.conn.execute
        if self.schema_version != SCHEMA_VERSION:
            problems.append(f"schema is v{self.schema_version}, expected v{SCHEMA_VERSION}")
        ids = {r[0] for r in q("SELECT id FROM programs")}
        for pid, code in q("SELECT id, code FROM programs"):
            if program_id(code) != pid:
                problems.append(f"program {pid[:12]}: id is not the sha256 of its code")
        for pid, parent, insp in q("SELECT id, parent_id, inspirations FROM programs"):
            if parent is not None and parent not in ids:
                problems.append(f"program {pid[:12]}: parent {parent[:12]} is not in the archive")
            for other in json.loads(insp):
                if other not in ids:
                    problems.append(f"program {pid[:12]}: inspiration {other[:12]} is not in the archive")
        for (pid,) in q("SELECT id FROM programs WHERE id NOT IN (SELECT program_id FROM results)"):
            problems.append(f"program {pid[:12]} was stored without a result")
        for (pid,) in q("SELECT program_id FROM results WHERE program_id NOT IN (SELECT id FROM programs)"):
            problems.append(f"result for unknown program {pid[:12]}")
        problems += self._check_steps(ids)
        problems += self._check_versions()
        for island, pid in q("SELECT m.island, m.program_id FROM members m LEFT JOIN results r "
                             "ON r.program_id = m.program_id WHERE r.correct IS NOT 1"):
            problems.append(f"island {island} holds {pid[:12]}, which is not a correct evaluated program")
        return problems

    def _check_steps(self, ids: set[str]) -> list[str]:
        problems = []
        steps = self.steps()
        for expected, step in enumerate(steps):
            if step.idx != expected:
                problems.append(f"steps are not contiguous: expected index {expected}, found {step.idx}")
                break
        for step in steps:
            if step.kind not in STEP_KINDS:
                problems.append(f"step {step.idx}: unknown kind '{step.kind}'")
            if step.kind in ("seed", "evaluated", "duplicate") and step.program_id not in ids:
                problems.append(f"step {step.idx}: program {str(step.program_id)[:12]} is not in the archive")
            if step.parent_id is not None and step.parent_id not in ids:
                problems.append(f"step {step.idx}: parent {step.parent_id[:12]} is not in the archive")
        if steps and steps[0].kind != "seed":
            problems.append("step 0 is not the seed")
        return problems

    def _check_versions(self) -> list[str]:
        problems = []
        previous = None
        for n, v in enumerate(self.versions(), start=1):
            if v["version"] != n:
                problems.append(f"versions are not numbered 1, 2, ...: found v{v['version']} at position {n}")
            result = self.result(v["program_id"])
            if result is None or not result.correct:
                problems.append(f"version {v['version']}: program {v['program_id'][:12]} is not a correct program")
            if previous is not None and not v["score"] > previous:
                problems.append(f"version {v['version']}: score {v['score']} does not improve on {previous}")
            previous = v["score"]
        return problems


def _program_values(record: ProgramRecord) -> dict[str, Any]:
    values = {k: getattr(record, k) for k in _PROGRAM_COLS}
    for key in _PROGRAM_TEXT:
        values[key] = scrub(values[key])
    values["inspirations"] = json.dumps(record.inspirations)
    values["created_at"] = record.created_at or time.time()
    return values
