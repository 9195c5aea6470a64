"""A machine's memory of how fast each program is, so a seeded campaign ranks programs the same way twice.

Wall-clock speed is the one score input that differs from run to run: on a loaded machine the same
program's speed against the reference can move by a factor of two. The default objective therefore uses
whole octaves of speed (see `evaluator.scoring`), and the first octave measured for a program on this
machine is kept here and reused by every later evaluation of that program under the same timing
conditions (evaluator version, trace, shape, device, reference, first-stage or full). Two campaigns with
the same seed on one machine then see identical scores and build identical archives, whatever the load.

The memo is a small SQLite file next to the trace cache; the first writer wins, so concurrent campaigns
agree. Delete the file (or set the task option `speed_memo = false`) to measure afresh.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from evaluator.traces.registry import cache_dir

_TABLE = "speed (key TEXT PRIMARY KEY, octaves INTEGER NOT NULL)"
_SCHEMA = [("index", "sqlite_autoindex_speed_1", None), ("table", "speed", f"CREATE TABLE {_TABLE}")]
_LOCK = threading.Lock()
_OPEN: dict[Path, tuple[sqlite3.Connection, tuple[int, int]]] = {}  # path -> (connection, the file's device, inode)


def memo_path() -> Path:
    return cache_dir().parent / "speed-memo.sqlite"


def timing_key(program_text: str, conditions: dict[str, Any]) -> str:
    """sha256 of the program and everything that changes its measured speed ratio."""
    blob = json.dumps({"program": program_text, **conditions}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _connection(path: Path) -> sqlite3.Connection:
    """The process's connection to the memo at `path`, opened once (opening, and a rollback journal made
    and removed per write, cost 0.45 ms an evaluation); reopened when the file was deleted or replaced.
    Called under `_LOCK`, which is also what makes one connection safe to share between threads."""
    known = _OPEN.get(path)
    try:
        stat = path.stat()
        identity = (stat.st_dev, stat.st_ino)
    except FileNotFoundError:
        identity = None
    if known is not None and known[1] == identity:
        return known[0]
    if known is not None:
        _OPEN.pop(path)
        known[0].close()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
    try:
        # nothing but the table (checked before anything is written): a trigger or a view in a damaged or
        # foreign file runs inside every write (a recursive one that never ended held `_LOCK`, and so every
        # evaluation of the process, forever)
        if sorted(conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall(), key=str) not in ([], _SCHEMA):
            raise sqlite3.DatabaseError("the speed memo holds more than its table")
        # a cache, not a record: no fsync per evaluation (a crash loses at most the newest octaves, which the
        # next evaluation measures again); write-ahead logging appends, and concurrent campaigns still agree
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {_TABLE}")
        stat = path.stat()
    except BaseException:
        conn.close()
        raise
    _OPEN[path] = (conn, (stat.st_dev, stat.st_ino))
    return conn


def remembered(key: str, measured: int, path: Path | None = None) -> int:
    """The octave stored under `key`; `measured` is stored (and returned) when there is none yet. The first
    writer wins, across threads and processes."""
    path = path or memo_path()
    with _LOCK:
        try:
            conn = _connection(path)
            conn.execute("INSERT OR IGNORE INTO speed (key, octaves) VALUES (?, ?)", (key, int(measured)))
            row = conn.execute("SELECT octaves FROM speed WHERE key = ?", (key,)).fetchone()
        except (sqlite3.Error, OSError):  # an unwritable cache must not fail an evaluation: use the fresh measurement
            dropped = _OPEN.pop(path, None)
            if dropped is not None:
                dropped[0].close()
            return int(measured)
    # an INTEGER column still stores text, blobs and reals (infinity too): only a whole number is an octave
    return row[0] if row and type(row[0]) is int else int(measured)
