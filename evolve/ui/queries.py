"""Read-only queries on one run's archive, shaped as plain JSON-ready dicts for the web view.

Every connection is opened with `mode=ro`, so the view can never write, and in WAL mode a reader
never blocks the campaign's writer (nor the writer the reader). Queries page their results and never
pull program code except for the one program asked for, so a 50,000-program archive answers its first
table page in milliseconds. Nothing here knows the problem: metric names are discovered from the
stored results.
"""
from __future__ import annotations

import difflib
import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from evolve.errors import UserError

ARCHIVE_NAME = "archive.sqlite"
MAX_PAGE = 500
TEXT_CAP = 20_000  # stdout/stderr/feedback shown on a program page, per field


class QueryError(ValueError):
    """A request the view cannot answer (bad filter, unknown program); the message is shown as is."""


def connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection; fails with a `UserError` naming the file when it is not an archive."""
    if not path.is_file():
        raise UserError(f"{path} does not exist; give a run directory made by `eplb-evolve run`")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA query_only = 1")
        conn.execute("SELECT 1 FROM programs LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{path} is not a readable archive ({exc}); point at a run's {ARCHIVE_NAME}") from None
    return conn


@dataclass
class RunSource:
    """One run directory the view serves, and the metric keys its plots use."""

    run_dir: Path
    name: str
    runtime_key: str = ""
    balance_key: str = ""
    metric_keys: list[str] = field(default_factory=list)

    @property
    def archive(self) -> Path:
        return self.run_dir / ARCHIVE_NAME

    def connect(self) -> sqlite3.Connection:
        return connect_ro(self.archive)

    def discover_keys(self, runtime_key: str = "", balance_key: str = "") -> None:
        """Metric names from stored results; runtime- and balance-like ones unless given."""
        conn = self.connect()
        try:
            self.metric_keys = metric_keys(conn)
        finally:
            conn.close()
        for flag, key in (("--runtime-key", runtime_key), ("--balance-key", balance_key)):
            if key and self.metric_keys and key not in self.metric_keys:
                raise UserError(f"{flag} {key}: {self.name} stores no such metric; "
                                f"choose one of {', '.join(self.metric_keys)}")
        self.runtime_key = runtime_key or _guess(self.metric_keys, ("runtime_median", "runtime", "time", "latency"))
        self.balance_key = balance_key or _guess(self.metric_keys, ("balancedness", "balance")) or next(
            (k for k in self.metric_keys if k != self.runtime_key), "")


def _guess(keys: list[str], hints: Iterable[str]) -> str:
    for hint in hints:
        for key in keys:
            if hint in key.lower():
                return key
    return ""


def metric_keys(conn: sqlite3.Connection, sample: int = 50) -> list[str]:
    """Numeric metric names seen in the first stored results (the seed's come first)."""
    keys: dict[str, None] = {}
    for (text,) in conn.execute("SELECT metrics FROM results ORDER BY rowid LIMIT ?", (sample,)):
        for key, value in _json(text, {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                keys.setdefault(str(key), None)
    return list(keys)


def _json(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except (TypeError, ValueError):
        return default


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: send them as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _path(key: str) -> str:
    """A JSON path naming one top-level key, quoted so any key text is safe."""
    return '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---- change detection -----------------------------------------------------------------------------------
def change_token(conn: sqlite3.Connection) -> str:
    """Cheap fingerprint of everything the campaign writes: each part is a max over a rowid or key."""
    row = conn.execute(
        "SELECT (SELECT MAX(rowid) FROM programs), (SELECT MAX(rowid) FROM results), (SELECT MAX(idx) FROM steps),"
        " (SELECT MAX(id) FROM events), (SELECT MAX(version) FROM versions)").fetchone()
    return ".".join("-" if v is None else str(v) for v in row)


# ---- run summary ------------------------------------------------------------------------------------------
def summary(conn: sqlite3.Connection, source: RunSource) -> dict[str, Any]:
    """What the header of a run shows: counts, best, seed, islands, the task stamp, how it ended."""
    q = conn.execute
    kinds = {kind: n for kind, n in q("SELECT kind, COUNT(*) FROM steps GROUP BY kind")}
    best = q("SELECT program_id, score, idx FROM versions ORDER BY version DESC LIMIT 1").fetchone()
    seed = q("SELECT program_id FROM steps WHERE kind = 'seed' ORDER BY idx LIMIT 1").fetchone()
    meta = {k: _json(v, None) for k, v in q("SELECT key, value FROM meta WHERE key IN "
                                            "('task', 'task_stamp', 'seed', 'created_at', 'config')")}
    config = meta.get("config") or {}
    campaign = config.get("campaign", {}) if isinstance(config, dict) else {}
    proposer = config.get("proposer", {}) if isinstance(config, dict) else {}
    stamp = meta.get("task_stamp") or {}
    started = q("SELECT MAX(id) FROM events WHERE kind = 'run_started'").fetchone()[0]
    finished = q("SELECT id, detail FROM events WHERE kind = 'run_finished' ORDER BY id DESC LIMIT 1").fetchone()
    if finished is not None and (started is None or finished["id"] > started):
        status = "finished: " + str(_json(finished["detail"], {}).get("reason", ""))
    else:
        status = "running, or stopped before it finished"
    islands = [r[0] for r in q("SELECT DISTINCT island FROM members ORDER BY island")]
    return {
        "name": source.name,
        "run_dir": str(source.run_dir),
        "programs": q("SELECT COUNT(*) FROM programs").fetchone()[0],
        "steps": kinds,
        "best": {"id": best["program_id"], "score": _finite(best["score"]), "step": best["idx"]} if best else None,
        "seed": seed[0] if seed else None,
        "islands": islands or list(range(int(campaign.get("islands", 1) or 1))),
        "task": meta.get("task"),
        "scorer": stamp.get("scorer") if isinstance(stamp, dict) else None,
        "evaluator_version": stamp.get("evaluator_version") if isinstance(stamp, dict) else None,
        "proposer": str(proposer.get("kind", "")).rsplit(":", 1)[-1] if isinstance(proposer, dict) else None,
        "seed_value": meta.get("seed"),
        "created_at": meta.get("created_at"),
        "status": status,
        "token": change_token(conn),
        "metric_keys": source.metric_keys,
        "runtime_key": source.runtime_key,
        "balance_key": source.balance_key,
    }


# ---- the program table ---------------------------------------------------------------------------------------
SORTS = {
    "n": "p.rowid", "score": "r.score", "island": "p.island", "generation": "p.generation",
    "proposer": "p.proposer", "model": "p.model", "created": "p.created_at", "patch": "p.patch_name",
    "correct": "r.correct", "runtime": "runtime", "balance": "balance", "cost": "p.cost",
}


@dataclass
class TableQuery:
    """Filters, order and page of the program table, parsed and checked from request parameters."""

    sort: str = "score"
    descending: bool = True
    limit: int = 50
    offset: int = 0
    score_min: float | None = None
    score_max: float | None = None
    runtime_min: float | None = None
    runtime_max: float | None = None
    island: int | None = None
    generation_min: int | None = None
    generation_max: int | None = None
    proposer: str = ""
    model: str = ""
    correct: bool | None = None
    error: str = ""
    text: str = ""  # id prefix or words of the patch name

    @classmethod
    def from_params(cls, params: dict[str, str]) -> "TableQuery":
        query = cls()
        for key, value in params.items():
            value = value.strip()
            if value == "" or key not in cls.__dataclass_fields__:
                continue
            kind = cls.__dataclass_fields__[key].type
            if key == "sort" and value not in SORTS:
                raise QueryError(f"cannot sort by '{value[:40]}'; choose one of {', '.join(SORTS)}")
            try:
                if key in ("descending", "correct"):
                    setattr(query, key, value.lower() in ("1", "true", "yes"))
                elif "float" in str(kind):
                    setattr(query, key, float(value))
                elif "int" in str(kind):
                    setattr(query, key, int(value))
                else:
                    setattr(query, key, value[:200])
            except ValueError:
                raise QueryError(f"filter {key}={value[:40]!r} is not a number") from None
        query.limit = max(1, min(MAX_PAGE, query.limit))
        query.offset = max(0, query.offset)
        return query


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def programs_page(conn: sqlite3.Connection, source: RunSource, query: TableQuery) -> dict[str, Any]:
    """One page of programs (no code), the total that match, and the filters applied."""
    where, args = [], []
    def add(clause: str, *values: Any) -> None:
        where.append(clause)
        args.extend(values)
    if query.score_min is not None:
        add("r.score >= ?", query.score_min)
    if query.score_max is not None:
        add("r.score <= ?", query.score_max)
    runtime = f"json_extract(r.metrics, '{_path(source.runtime_key)}')" if source.runtime_key else "NULL"
    balance = f"json_extract(r.metrics, '{_path(source.balance_key)}')" if source.balance_key else "NULL"
    if query.runtime_min is not None:
        add(f"{runtime} >= ?", query.runtime_min)
    if query.runtime_max is not None:
        add(f"{runtime} <= ?", query.runtime_max)
    if query.island is not None:
        add("p.island = ?", query.island)
    if query.generation_min is not None:
        add("p.generation >= ?", query.generation_min)
    if query.generation_max is not None:
        add("p.generation <= ?", query.generation_max)
    if query.proposer:
        add("p.proposer = ?", query.proposer)
    if query.model:
        add("p.model = ?", query.model)
    if query.correct is not None:
        add("COALESCE(r.correct, 0) = ?", int(query.correct))
    if query.error:
        add("r.error LIKE ? ESCAPE '\\'", _like(query.error))
    if query.text:
        add("(p.id LIKE ? OR p.patch_name LIKE ? ESCAPE '\\')", query.text.lower() + "%", _like(query.text))
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    order = SORTS[query.sort]
    direction = "DESC" if query.descending else "ASC"
    # SQLite sorts NULL lowest: descending puts them last already, and that order can walk an index
    nulls = "" if query.descending else f"{order} IS NULL, "
    # every program is stored with its result (one transaction), so an inner join loses nothing;
    # incorrect programs (no score) and missing metrics sort last either way
    sql = (f"SELECT p.rowid AS n, p.id, p.parent_id, p.island, p.generation, p.patch_name, p.proposer, p.model,"
           f" p.cost, p.created_at, r.correct, r.score, substr(r.error, 1, 300) AS error,"
           f" {runtime} AS runtime, {balance} AS balance"
           f" FROM programs p JOIN results r ON r.program_id = p.id{clause}"
           f" ORDER BY {nulls}{order} {direction}, p.rowid {direction} LIMIT ? OFFSET ?")
    rows = [{k: _finite(row[k]) for k in row.keys()} for row in conn.execute(sql, [*args, query.limit, query.offset])]
    if where:
        total = conn.execute(f"SELECT COUNT(*) FROM programs p JOIN results r ON r.program_id = p.id{clause}",
                             args).fetchone()[0]
    else:
        total = conn.execute("SELECT COUNT(*) FROM programs").fetchone()[0]
    return {"rows": rows, "total": total, "offset": query.offset, "limit": query.limit,
            "runtime_key": source.runtime_key, "balance_key": source.balance_key}


def choices(conn: sqlite3.Connection) -> dict[str, list[Any]]:
    """Values the table's drop-down filters offer."""
    return {
        "island": [r[0] for r in conn.execute("SELECT DISTINCT island FROM programs ORDER BY island LIMIT 200")],
        "proposer": [r[0] for r in conn.execute("SELECT DISTINCT proposer FROM programs ORDER BY 1 LIMIT 200")],
        "model": [r[0] for r in conn.execute("SELECT DISTINCT model FROM programs ORDER BY 1 LIMIT 200")],
    }


# ---- one program ------------------------------------------------------------------------------------------
def resolve(conn: sqlite3.Connection, text: str) -> str:
    """A full program id from an id or a unique prefix."""
    text = text.strip().lower()
    if not text or any(c not in "0123456789abcdef" for c in text):
        raise QueryError(f"'{text[:70]}' is not a program id (hexadecimal)")
    rows = conn.execute("SELECT id FROM programs WHERE id >= ? AND id < ? LIMIT 2", (text, text + "g")).fetchall()
    if len(rows) != 1:
        raise QueryError(f"{'no program' if not rows else 'more than one program'} with id starting '{text}'")
    return rows[0][0]


def _cap(text: str | None, limit: int = TEXT_CAP) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


def program(conn: sqlite3.Connection, pid: str) -> dict[str, Any]:
    """Code, lineage fields, result, steps, islands, children and ancestors of one program."""
    pid = resolve(conn, pid)
    row = conn.execute("SELECT rowid AS n, * FROM programs WHERE id = ?", (pid,)).fetchone()
    data: dict[str, Any] = dict(row)
    data["inspirations"] = _json(data["inspirations"], [])
    res = conn.execute("SELECT * FROM results WHERE program_id = ?", (pid,)).fetchone()
    if res is not None:
        data["result"] = {
            "correct": bool(res["correct"]), "score": _finite(res["score"]), "error": _cap(res["error"]),
            "metrics": {k: _finite(v) for k, v in _json(res["metrics"], {}).items()},
            "scores": {k: _finite(v) for k, v in _json(res["scores"], {}).items()},
            "per_window": _json(res["per_window"], []), "feedback": _cap(res["feedback"]),
            "stdout": _cap(res["stdout"]), "stderr": _cap(res["stderr"]), "scorer": res["scorer"],
            "evaluator_version": res["evaluator_version"], "dataset": _json(res["dataset"], {}),
            "evaluated_at": res["evaluated_at"],
        }
    else:
        data["result"] = None
    data["steps"] = [dict(r) for r in conn.execute(
        "SELECT idx, kind, island, error, proposer, model, applied_at FROM steps WHERE program_id = ? ORDER BY idx",
        (pid,))]
    data["members"] = [dict(r) for r in conn.execute(
        "SELECT island, idx, via FROM members WHERE program_id = ? ORDER BY idx", (pid,))]
    data["versions"] = [dict(r) for r in conn.execute(
        "SELECT version, score, idx FROM versions WHERE program_id = ? ORDER BY version", (pid,))]
    data["children"] = [dict(r) for r in conn.execute(
        "SELECT p.id, p.island, p.generation, p.patch_name, r.correct, r.score FROM programs p"
        " LEFT JOIN results r ON r.program_id = p.id WHERE p.parent_id = ? ORDER BY p.rowid LIMIT 500", (pid,))]
    data["ancestors"] = ancestors(conn, pid)
    return data


def ancestors(conn: sqlite3.Connection, pid: str, limit: int = 10_000) -> list[dict[str, Any]]:
    """Root first, down to `pid`'s parent."""
    chain: list[dict[str, Any]] = []
    seen = {pid}
    row = conn.execute("SELECT parent_id FROM programs WHERE id = ?", (pid,)).fetchone()
    current = row[0] if row else None
    while current and current not in seen and len(chain) < limit:
        seen.add(current)
        r = conn.execute("SELECT p.id, p.parent_id, p.patch_name, p.generation, r.score FROM programs p"
                         " LEFT JOIN results r ON r.program_id = p.id WHERE p.id = ?", (current,)).fetchone()
        if r is None:
            break
        chain.append({"id": r["id"], "patch_name": r["patch_name"], "generation": r["generation"],
                      "score": _finite(r["score"])})
        current = r["parent_id"]
    return list(reversed(chain))


def code_of(conn: sqlite3.Connection, pid: str) -> tuple[str, str]:
    pid = resolve(conn, pid)
    return pid, conn.execute("SELECT code FROM programs WHERE id = ?", (pid,)).fetchone()[0]


def diff(old: str, new: str, context: int = 3) -> dict[str, Any]:
    """Line diff as hunks of opcodes; the page draws it unified or side by side."""
    a, b = old.splitlines(), new.splitlines()
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    hunks = []
    groups = matcher.get_grouped_opcodes(context) if context >= 0 else [matcher.get_opcodes()]
    for group in groups:
        hunks.append([{"tag": tag, "a_start": i1 + 1, "b_start": j1 + 1, "a": a[i1:i2], "b": b[j1:j2]}
                      for tag, i1, i2, j1, j2 in group])
    added = sum(j2 - j1 for tag, _, _, j1, j2 in matcher.get_opcodes() if tag in ("insert", "replace"))
    removed = sum(i2 - i1 for tag, i1, i2, _, _ in matcher.get_opcodes() if tag in ("delete", "replace"))
    identical = a == b
    return {"hunks": [] if identical else hunks, "added": added, "removed": removed, "identical": identical}


# ---- genealogy ----------------------------------------------------------------------------------------------
def tree(conn: sqlite3.Connection, limit: int = 1500) -> dict[str, Any]:
    """Programs as nodes with parent edges; past `limit` nodes, the best path, the top and the newest
    programs with all their ancestors (the rest are counted per node as hidden children)."""
    # two narrow scans joined here: each reads a covering index, where a join would visit every row
    outcome = {pid: (correct, score) for pid, correct, score in
               conn.execute("SELECT program_id, correct, score FROM results")}
    info = {pid: (n, parent, island, generation) for n, pid, parent, island, generation in
            conn.execute("SELECT rowid, id, parent_id, island, generation FROM programs")}
    parents = {pid: row[1] for pid, row in info.items()}
    best_row = conn.execute("SELECT program_id FROM versions ORDER BY version DESC LIMIT 1").fetchone()
    best = best_row[0] if best_row else None
    best_path = _chain(parents, best) if best else []
    if len(info) <= limit:
        keep = dict.fromkeys(info)
    else:
        keep = dict.fromkeys(best_path)
        scored = sorted((pid for pid, (_, score) in outcome.items() if score is not None and pid in info),
                        key=lambda pid: -outcome[pid][1])
        newest = sorted(info, key=lambda pid: -info[pid][0])
        for a, b in zip(scored + [None] * len(newest), newest):
            for pick in (a, b):
                if pick is not None and pick not in keep and len(keep) < limit:
                    keep.update(dict.fromkeys(_chain(parents, pick)))
            if len(keep) >= limit:
                break
    children: dict[str, int] = {}
    for parent in parents.values():
        if parent:
            children[parent] = children.get(parent, 0) + 1
    shown: dict[str, int] = {}
    for pid in keep:
        if parents[pid] in keep:
            shown[parents[pid]] = shown.get(parents[pid], 0) + 1
    migrated: dict[str, list[int]] = {}
    for island, pid in conn.execute("SELECT island, program_id FROM members WHERE via = 'migration'"):
        migrated.setdefault(pid, []).append(island)
    names: dict[str, str] = {}
    ids = list(keep)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        names.update(conn.execute(f"SELECT id, patch_name FROM programs WHERE id IN ({','.join('?' * len(chunk))})",
                                  chunk).fetchall())
    out = []
    for pid in keep:
        n, parent, island, generation = info[pid]
        correct, score = outcome.get(pid, (0, None))
        out.append({"id": pid, "parent": parent if parent in keep else None, "n": n, "island": island,
                    "generation": generation, "name": names.get(pid, ""), "correct": bool(correct),
                    "score": _finite(score), "hidden": children.get(pid, 0) - shown.get(pid, 0),
                    "migrated_to": migrated.get(pid, [])})
    out.sort(key=lambda node: node["n"])
    return {"nodes": out, "total": len(info), "best": best, "best_path": best_path,
            "truncated": len(info) - len(out)}


def _chain(parents: dict[str, str | None], pid: str) -> list[str]:
    """Root first, down to `pid`."""
    chain, seen, current = [], set(), pid
    while current and current in parents and current not in seen:
        seen.add(current)
        chain.append(current)
        current = parents[current]
    return list(reversed(chain))


# ---- figures' data ------------------------------------------------------------------------------------------
def islands_over_time(conn: sqlite3.Connection, max_points: int = 4000) -> dict[str, Any]:
    """Per island: correct programs' scores by step (sampled past `max_points`) and the best so far."""
    scores = dict(conn.execute("SELECT program_id, score FROM results WHERE correct = 1 AND score IS NOT NULL"))
    rows = [(idx, island, pid, scores[pid]) for idx, island, pid in
            conn.execute("SELECT idx, island, program_id FROM steps WHERE kind IN ('seed', 'evaluated') ORDER BY idx")
            if pid in scores]
    stride = max(1, math.ceil(len(rows) / max_points))
    islands: dict[int, dict[str, list]] = {}
    best: dict[int, float] = {}
    overall: list[list[Any]] = []
    top = None
    for k, (idx, island, pid, score) in enumerate(rows):
        score = _finite(score)
        if score is None:
            continue
        series = islands.setdefault(island, {"points": [], "best": []})
        improved = island not in best or score > best[island]
        if improved:
            best[island] = score
            series["best"].append([idx, score, pid])
        if improved or k % stride == 0:
            series["points"].append([idx, score, pid])
        if top is None or score > top:
            top = score
            overall.append([idx, score, pid])
    last = conn.execute("SELECT MAX(idx) FROM steps").fetchone()[0]
    return {"islands": {str(k): v for k, v in sorted(islands.items())}, "best": overall, "last_step": last,
            "sampled": stride > 1}


def pareto(conn: sqlite3.Connection, source: RunSource, runtime_key: str, balance_key: str,
           max_points: int = 5000) -> dict[str, Any]:
    """Balance against runtime of correct programs, the non-dominated front marked."""
    for key in (runtime_key, balance_key):
        if key not in source.metric_keys:
            raise QueryError(f"no metric '{key[:60]}' in this run; known: {', '.join(source.metric_keys)}")
    rows = conn.execute(
        f"SELECT program_id, json_extract(metrics, '{_path(runtime_key)}') AS x,"
        f" json_extract(metrics, '{_path(balance_key)}') AS y FROM results WHERE correct = 1").fetchall()
    points = [(r["x"], r["y"], r["program_id"]) for r in rows
              if isinstance(r["x"], (int, float)) and isinstance(r["y"], (int, float))
              and math.isfinite(r["x"]) and math.isfinite(r["y"])]
    front, top = [], -math.inf
    for x, y, pid in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > top:
            front.append([x, y, pid])
            top = y
    stride = max(1, math.ceil(len(points) / max_points))
    return {"points": [[x, y, pid] for k, (x, y, pid) in enumerate(points) if k % stride == 0],
            "front": front, "runtime_key": runtime_key, "balance_key": balance_key, "total": len(points),
            "sampled": stride > 1}


def best_curve(conn: sqlite3.Connection) -> list[list[Any]]:
    """Best score so far against evaluations (seed = 0), for comparing runs."""
    curve, evaluations = [], 0
    scores = dict(conn.execute("SELECT program_id, score FROM results WHERE correct = 1 AND score IS NOT NULL"))
    steps = "SELECT kind, program_id FROM steps WHERE kind IN ('seed', 'evaluated') ORDER BY idx"
    for kind, pid in conn.execute(steps):
        evaluations += kind == "evaluated"
        score = _finite(scores.get(pid))
        if score is not None and (not curve or score > curve[-1][1]):
            curve.append([evaluations, score])
    if curve:
        curve.append([evaluations, curve[-1][1]])
    return curve
