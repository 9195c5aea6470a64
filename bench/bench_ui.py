"""Does a large archive open quickly in the web view? First table page against a naive full load, same run.

Builds a synthetic archive of `--programs` programs (default 50,000) with the archive module's schema:
each program has ~2 KB of code, a parent among the earlier ones, an island, a result with metrics and
eight per-window rows (one in eight is incorrect with an error line), and a step. Then it times, best of
`--repeat`:
  1. the first table page (50 rows, best score first) as `evolve.ui.queries` runs it;
  2. the same page over HTTP from a running `eplb-evolve ui` server (request, JSON, response), and every
     request the page makes before its table shows;
  3. the genealogy (1,500 nodes at most), the islands figure and the change token, over HTTP;
  4. the naive way: every program with its result and code, loaded and encoded as JSON.
and prints the ratios of 4 against 1 and 2. Timings are wall-clock on a shared machine: read the ratios.

Run: `.venv/bin/python bench/bench_ui.py [--programs 50000] [--repeat 5] [--keep DIR]`
"""
from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evolve.archive import Archive, program_id  # noqa: E402
from evolve.ui import queries  # noqa: E402
from evolve.ui.cli import make_sources  # noqa: E402
from evolve.ui.server import start_in_thread  # noqa: E402

BODY = "".join(f"    x{i} = weight.sum(dim=-1) * {i} + offset  # line {i} of the balancer body\n" for i in range(28))


def build(path: Path, n: int, islands: int = 4, seed: int = 0) -> None:
    """A synthetic archive with `n` programs, written in one transaction after the archive makes its schema."""
    Archive(path).close()
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    ids: list[str] = []
    programs, results, steps = [], [], []
    t0 = 1.7e9
    best = -1e9
    versions = []
    for i in range(n):
        code = f"def rebalance(weight, offset):\n    # variant {i}\n{BODY}    return x{i % 28}\n"
        pid = program_id(code)
        parent = ids[rng.randrange(max(0, len(ids) - 2000), len(ids))] if ids else None
        island = 0 if parent is None else rng.randrange(islands)
        correct = i == 0 or rng.random() > 0.125
        score = rng.gauss(0.8, 0.05) + i * 1e-6 if correct else None
        metrics = {"balancedness_gpu": score or 0.0, "runtime_median_s": rng.lognormvariate(-6, 0.5),
                   "max_load": rng.random()}
        windows = [{"window": w, "balancedness_gpu": rng.random()} for w in range(8)]
        programs.append((pid, code, parent, "[]", island, 0 if parent is None else i % 97, f"patch {i}",
                         "synthetic", "", "mutator", "", 0, 0, 0.0, t0 + i))
        results.append((pid, int(correct), "" if correct else f"IndexError: slot {i} out of range", score,
                        json.dumps(metrics), json.dumps({"balancedness_gpu": score}) if correct else "{}",
                        json.dumps(windows), t0 + i))
        steps.append((i, "seed" if i == 0 else "evaluated", pid, parent, island, t0 + i))
        if correct and score > best:
            best = score
            versions.append((len(versions) + 1, pid, score, i, t0 + i))
        ids.append(pid)
    with conn:
        conn.executemany("INSERT INTO programs (id, code, parent_id, inspirations, island, generation, patch_name,"
                         " patch_description, patch_diff, proposer, model, tokens_in, tokens_out, cost, created_at)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", programs)
        conn.executemany("INSERT INTO results (program_id, correct, error, score, metrics, scores, per_window,"
                         " evaluated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", results)
        conn.executemany("INSERT INTO steps (idx, kind, program_id, parent_id, island, applied_at)"
                         " VALUES (?, ?, ?, ?, ?, ?)", steps)
        conn.executemany("INSERT INTO versions VALUES (?, ?, ?, ?, '', ?)", versions)
        conn.executemany("INSERT OR IGNORE INTO members VALUES (?, ?, ?, 'birth')",
                         [(s[4], s[2], s[0]) for s in steps[:: max(1, n // 200)]])
    conn.close()


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def naive_load(path: Path) -> int:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    rows = conn.execute("SELECT p.*, r.* FROM programs p LEFT JOIN results r ON r.program_id = p.id").fetchall()
    conn.close()
    return len(json.dumps([list(r) for r in rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", metavar="DIR", help="build the run in DIR and leave it there")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.keep or tmp) / "bench-ui-run"
        run.mkdir(parents=True, exist_ok=True)
        archive = run / "archive.sqlite"
        if not archive.exists():
            t = time.perf_counter()
            print(f"building a {args.programs}-program archive ...", flush=True)
            build(archive, args.programs)
            print(f"  built in {time.perf_counter() - t:.1f} s, {archive.stat().st_size / 1e6:.0f} MB", flush=True)
        source = make_sources([run])[0]
        query = queries.TableQuery()
        conn = source.connect()
        page = best_of(args.repeat, lambda: queries.programs_page(conn, source, query))
        total = queries.programs_page(conn, source, query)["total"]
        conn.close()
        server = start_in_thread([source])
        try:
            def get(path: str) -> bytes:
                with urllib.request.urlopen(server.url + path) as response:
                    return response.read()
            http = best_of(args.repeat, lambda: get("api/run/0/programs?limit=50"))
            # everything the page asks for before its table shows: the runs' summaries, the filters' choices, page 1
            pages = ("", "static/views.js", "api/runs", "api/run/0/choices", "api/run/0/programs?limit=50")
            opening = best_of(args.repeat, lambda: [get(p) for p in pages])
            filtered = best_of(args.repeat,
                               lambda: get("api/run/0/programs?limit=50&correct=0&error=range&sort=runtime"))
            token = best_of(args.repeat, lambda: get("api/run/0/changes"))
            tree = best_of(max(1, args.repeat // 2), lambda: get("api/run/0/tree"))
            islands = best_of(max(1, args.repeat // 2), lambda: get("api/run/0/islands"))
            program = best_of(args.repeat, lambda: get("api/run/0/program/" + source_best(archive)))
        finally:
            server.shutdown()
            server.server_close()
        naive = best_of(max(1, args.repeat // 2), lambda: naive_load(archive))
    print(f"archive: {total} programs")
    print(f"  first table page, query only        {page * 1e3:8.1f} ms")
    print(f"  first table page, HTTP round trip   {http * 1e3:8.1f} ms")
    print(f"  opening the table page (HTML, script, runs, choices, first page), HTTP  {opening * 1e3:8.1f} ms")
    print(f"  filtered page (incorrect, error text, by runtime), HTTP  {filtered * 1e3:8.1f} ms")
    print(f"  change token (polled every 2 s)     {token * 1e3:8.1f} ms")
    print(f"  one program page                    {program * 1e3:8.1f} ms")
    print(f"  genealogy, 1500 nodes at most       {tree * 1e3:8.1f} ms")
    print(f"  islands figure                      {islands * 1e3:8.1f} ms")
    print(f"  naive: every row with code, as JSON {naive * 1e3:8.1f} ms")
    print(f"ratio naive / first page: query {naive / page:.0f}x, HTTP {naive / http:.0f}x")


def source_best(archive: Path) -> str:
    conn = sqlite3.connect(f"{archive.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT program_id FROM versions ORDER BY version DESC LIMIT 1").fetchone()[0]
    finally:
        conn.close()


if __name__ == "__main__":
    main()
