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

_LOCK = threading.Lock()
_READY: set[Path] = set()  # memo files this process has seen with their table: no mkdir or CREATE again


def memo_path() -> Path:
    return cache_dir().parent / "speed-memo.sqlite"


def timing_key(program_text: str, conditions: dict[str, Any]) -> str:
    """sha256 of the program and everything that changes its measured speed ratio."""
    blob = json.dumps({"program": program_text, **conditions}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def remembered(key: str, measured: int, path: Path | None = None) -> int:
    """The octave stored under `key`; `measured` is stored (and returned) when there is none yet."""
    path = path or memo_path()
    with _LOCK:
        try:
            if path not in _READY:
                path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=30.0)
            try:
                # a cache, not a record: no fsync per evaluation (a crash loses at most the newest octaves,
                # which the next evaluation measures again); the first writer still wins
                conn.execute("PRAGMA synchronous = OFF")
                with conn:
                    if path not in _READY:
                        conn.execute("CREATE TABLE IF NOT EXISTS speed (key TEXT PRIMARY KEY, "
                                     "octaves INTEGER NOT NULL)")
                    conn.execute("INSERT OR IGNORE INTO speed (key, octaves) VALUES (?, ?)", (key, int(measured)))
                    row = conn.execute("SELECT octaves FROM speed WHERE key = ?", (key,)).fetchone()
            finally:
                conn.close()
            _READY.add(path)
        except (sqlite3.Error, OSError):  # an unwritable cache must not fail an evaluation: use the fresh measurement
            _READY.discard(path)
            return int(measured)
    return int(row[0]) if row else int(measured)
