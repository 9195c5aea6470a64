"""The archive web view: read-only queries, a safe server, and a real headless Chromium following a live campaign.

The campaign is the toy problem's, run in a background thread; its task waits on a gate the test opens,
so the test decides when new programs appear (no sleeps, no timing assumptions). Its proposer also
writes one program whose code, patch name and error carry HTML and script, which must show as text.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from evolve import campaign_cli
from evolve.archive import Archive
from evolve.cli import main as cli_main
from evolve.config import Config
from evolve.proposers.base import Proposal, ProposalRequest
from evolve.ui import queries
from evolve.ui.cli import make_sources
from evolve.ui.server import CSP, start_in_thread
from evolve.ui.transcripts import scrub
from tests.toy_task import ToyProposer, ToyTask, toy_config

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
FAKE_KEY = "sk-" + "A1b2C3d4E5f6G7h8I9j0" * 2

# The gate: each evaluation takes one permit; the test releases them. Keyed by run, so tests may overlap.
GATES: dict[str, threading.Semaphore] = {}


class GatedTask(ToyTask):
    def __init__(self, options: dict[str, Any]) -> None:
        options = dict(options)
        self.gate = GATES[options.pop("gate")]
        super().__init__(options)

    def evaluate(self, program_text: str):
        if not self.gate.acquire(timeout=120):  # a hang guard, not a timing assertion
            raise RuntimeError("the test never opened the gate")
        return super().evaluate(program_text)


def make_gated_task(options: dict[str, Any]) -> GatedTask:
    return GatedTask(options)


class HostileProposer(ToyProposer):
    """The toy proposer, except that its third child carries markup in a comment, and its fourth raises it."""

    def propose(self, request: ProposalRequest) -> Proposal:
        proposal = super().propose(request)
        if self.calls in (3, 4) and proposal.ok:
            if self.calls == 3:
                proposal.child_code += f"# {HOSTILE}\n"  # on top of a real change: novelty keeps it
            else:
                proposal.child_code = request.parent.code.replace(
                    "    return", f"    raise ValueError({HOSTILE!r})\n    return", 1)
            proposal.name = f"<b>bold</b>{HOSTILE}"
        return proposal


def make_hostile_proposer(config: Config, run_dir: Path) -> HostileProposer:
    return HostileProposer({"fail": 0.0, "broken": 0.0, "repeat": 0.0})


class LiveCampaign:
    """A toy campaign in a thread whose evaluations wait for `release(n)`."""

    def __init__(self, tmp: Path, name: str, evaluations: int = 60) -> None:
        GATES[name] = threading.Semaphore(0)
        self.gate = GATES[name]
        self.config = toy_config(tmp, name, max_evaluations=evaluations, islands=3, migration_interval=4)
        self.config.proposer.kind = "tests.test_ui:make_hostile_proposer"
        self.config.task.factory = "tests.test_ui:make_gated_task"
        self.config.task.options["gate"] = name
        self.run_dir = Path(self.config.campaign.out)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            campaign_cli.run_campaign(self.config, self.run_dir, False, holdout=False)
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def start(self, first: int) -> "LiveCampaign":
        self.release(first)
        self.thread.start()
        self.wait_for(lambda n: n >= first)
        return self

    def release(self, n: int) -> None:
        for _ in range(n):
            self.gate.release()

    def programs(self) -> int:
        path = self.run_dir / "archive.sqlite"
        if not path.exists():
            return 0
        try:
            conn = queries.connect_ro(path)
        except Exception:
            return 0
        try:
            return conn.execute("SELECT COUNT(*) FROM programs").fetchone()[0]
        finally:
            conn.close()

    def wait_for(self, condition) -> int:
        give_up = time.monotonic() + 120  # a hang guard, not a timing assertion
        while not condition(n := self.programs()):
            assert self.error is None, self.error
            assert time.monotonic() < give_up, f"the campaign stalled at {n} programs"
            time.sleep(0.05)
        return n

    def finish(self) -> None:
        self.release(10_000)
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the campaign did not finish"
        assert self.error is None, self.error


def hostile_ids(run_dir: Path) -> tuple[str, str]:
    """(the correct program with markup in its code, the incorrect one with markup in its error)."""
    conn = queries.connect_ro(run_dir / "archive.sqlite")
    try:
        rows = conn.execute("SELECT p.id, r.correct FROM programs p JOIN results r ON r.program_id = p.id "
                            "WHERE p.code LIKE '%<script>%' ORDER BY p.rowid").fetchall()
    finally:
        conn.close()
    good = next(pid for pid, correct in rows if correct)
    bad = next(pid for pid, correct in rows if not correct)
    return good, bad


def write_transcript(run_dir: Path, pid: str) -> None:
    """A transcript in the LLM proposer's format for `pid`, with a key-shaped string and markup in the reply."""
    key = "k" * 64
    records = [
        {"kind": "header", "version": 1, "proposer": "llm", "models": ["m"]},
        {"kind": "call", "request_key": key, "attempt": 1, "try": 1, "model": "m", "params": {"api_key": FAKE_KEY},
         "messages": [{"role": "system", "content": "You improve programs."},
                      {"role": "user", "content": f"Improve this. Authorization: Bearer {FAKE_KEY}"}],
         "reply": f"Here is the patch {HOSTILE} and my key {FAKE_KEY}", "usage": {"prompt_tokens": 10,
                                                                                  "completion_tokens": 5},
         "error": "", "finish_reason": "stop"},
        {"kind": "proposal", "request_key": key, "child_sha256": pid, "model": "m", "attempts": 1, "ok": True,
         "error": "", "tokens_in": 10, "tokens_out": 5, "cost": 0.001},
    ]
    with open(run_dir / "transcript.jsonl", "w") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in records))
        fh.write('{"kind": "call", "partial record still being wri')  # no newline: must be skipped


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished hostile toy campaign, shared by the tests that only read."""
    campaign = LiveCampaign(tmp_path_factory.mktemp("ui"), "finished", evaluations=40)
    campaign.start(1)
    campaign.finish()
    return campaign.run_dir


@pytest.fixture
def server(finished_run: Path):
    srv = start_in_thread(make_sources([finished_run]))
    yield srv
    srv.shutdown()
    srv.server_close()


# ---- queries ----------------------------------------------------------------------------------------------
def test_table_pages_sorts_and_filters(finished_run: Path) -> None:
    source = make_sources([finished_run])[0]
    assert source.runtime_key == "runtime_s"  # guessed from the stored metrics
    conn = source.connect()
    try:
        everything = queries.programs_page(conn, source, queries.TableQuery(limit=500))
        total = everything["total"]
        assert total == conn.execute("SELECT COUNT(*) FROM programs").fetchone()[0] > 30
        scores = [r["score"] for r in everything["rows"]]
        scored = [s for s in scores if s is not None]
        assert scored == sorted(scored, reverse=True) and scores[: len(scored)] == scored  # incorrect last
        first = queries.programs_page(conn, source, queries.TableQuery.from_params({"limit": "10"}))
        second = queries.programs_page(conn, source, queries.TableQuery.from_params({"limit": "10", "offset": "10"}))
        assert [r["id"] for r in first["rows"] + second["rows"]] == [r["id"] for r in everything["rows"][:20]]
        bad = queries.programs_page(conn, source, queries.TableQuery.from_params({"correct": "0", "limit": "500"}))
        assert bad["rows"] and all(r["correct"] == 0 for r in bad["rows"])
        correct = queries.programs_page(conn, source, queries.TableQuery.from_params({"correct": "1"}))
        assert bad["total"] + correct["total"] == total
        island = queries.programs_page(conn, source, queries.TableQuery.from_params({"island": "1", "limit": "500"}))
        assert island["rows"] and {r["island"] for r in island["rows"]} == {1}
        errors = queries.programs_page(conn, source, queries.TableQuery.from_params({"error": "onerror"}))
        assert errors["total"] == 1 and "<img src=x" in errors["rows"][0]["error"]
        wild = queries.programs_page(conn, source, queries.TableQuery.from_params({"error": "%"}))
        assert wild["total"] == 0  # LIKE wildcards in the filter are literal text
        by_gen = queries.programs_page(conn, source, queries.TableQuery.from_params(
            {"sort": "generation", "descending": "0", "generation_min": "2", "limit": "500"}))
        gens = [r["generation"] for r in by_gen["rows"]]
        assert gens == sorted(gens) and min(gens) >= 2
        fast = queries.programs_page(conn, source,
                                     queries.TableQuery.from_params({"sort": "runtime", "runtime_max": "0.0003"}))
        assert all(r["runtime"] <= 0.0003 for r in fast["rows"]) and fast["total"] > 0
        with pytest.raises(queries.QueryError, match="cannot sort by"):
            queries.TableQuery.from_params({"sort": "code; DROP TABLE programs"})
        with pytest.raises(queries.QueryError, match="not a number"):
            queries.TableQuery.from_params({"score_min": "high"})
    finally:
        conn.close()


def test_reader_cannot_write_and_sees_lineage(finished_run: Path) -> None:
    conn = queries.connect_ro(finished_run / "archive.sqlite")
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            conn.execute("DELETE FROM programs")
        best = conn.execute("SELECT program_id FROM versions ORDER BY version DESC LIMIT 1").fetchone()[0]
        page = queries.program(conn, best[:10])
        assert page["id"] == best and page["versions"] and page["ancestors"][0]["generation"] == 0
        seed = page["ancestors"][0]["id"]
        assert [c["id"] for c in queries.program(conn, seed)["children"]]
        d = queries.diff(queries.code_of(conn, seed)[1], page["code"])
        assert not d["identical"] and d["added"] >= 1 and d["hunks"][0][0]["tag"] == "equal"
        with pytest.raises(queries.QueryError, match="not a program id"):
            queries.resolve(conn, "../../etc")
    finally:
        conn.close()


def test_tree_past_its_limit_keeps_the_best_path_and_whole_ancestries(finished_run: Path) -> None:
    conn = queries.connect_ro(finished_run / "archive.sqlite")
    try:
        full = queries.tree(conn, limit=10_000)
        small = queries.tree(conn, limit=12)
    finally:
        conn.close()
    assert full["truncated"] == 0 and len(full["nodes"]) == full["total"]
    assert small["truncated"] == full["total"] - len(small["nodes"]) > 0
    ids = {n["id"] for n in small["nodes"]}
    assert set(small["best_path"]) <= ids and small["best"] in ids
    assert sum(1 for n in small["nodes"] if n["parent"] is None) == 1  # one root: every ancestor is kept
    assert 0 < sum(n["hidden"] for n in small["nodes"]) <= small["truncated"]  # hidden children of shown nodes
    assert any(n["migrated_to"] for n in full["nodes"])  # migrations are visible


def test_scrub_masks_credentials_and_keeps_prose() -> None:
    text = f"key {FAKE_KEY}; Authorization: Bearer abcdefghijkl12345; api_key=\"hunter2hunter2\"; ghp_{'x' * 30}"
    masked = scrub(text)
    assert FAKE_KEY not in masked and "abcdefghijkl12345" not in masked and "hunter2" not in masked
    assert "ghp_" not in masked and masked.count("***") == 4
    assert scrub("def balance(weight): return weight.sum() # a tokenizer-free prose line") == \
        "def balance(weight): return weight.sum() # a tokenizer-free prose line"


def test_transcript_index_reads_records_as_the_file_grows(tmp_path: Path) -> None:
    from evolve.ui.transcripts import TranscriptIndex

    path = tmp_path / "transcript.jsonl"
    write_transcript(tmp_path, "a" * 64)
    index = TranscriptIndex(path)
    assert index.conversation("a" * 64)["calls"][0]["model"] == "m"
    assert index.conversation("b" * 64) is None
    with open(path, "a") as fh:  # the half-written line is finished, then another proposal follows
        fh.write('ten"}\n' + json.dumps({"kind": "call", "request_key": "r2", "attempt": 1, "reply": "second",
                                          "messages": []}) + "\n")
        fh.write(json.dumps({"kind": "proposal", "request_key": "r2", "child_sha256": "b" * 64}) + "\n")
    assert [c["reply"] for c in index.conversation("b" * 64)["calls"]] == ["second"]
    assert len(index.conversation("a" * 64)["calls"]) == 1


# ---- the server ---------------------------------------------------------------------------------------------
def test_server_is_read_only_and_sends_its_policy(server, finished_run: Path) -> None:
    base = server.url
    status, headers, body = get(base)
    assert status == 200 and headers["Content-Security-Policy"] == CSP and b"<script>" not in body
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
    for path in ("api/runs", "static/app.js", "api/run/0/programs?limit=5", "api/run/9/summary", "nowhere"):
        status, headers, _ = get(base + path)
        assert headers.get("Content-Security-Policy") == CSP and headers.get("X-Content-Type-Options") == "nosniff"
    assert get(base + "api/run/9/summary")[0] == 404
    assert get(base + "static/../queries.py")[0] == 404 and get(base + "static/%2e%2e/cli.py")[0] == 404
    status, _, body = get(base + "api/run/0/programs?sort=nope")
    assert status == 400 and "cannot sort by 'nope'" in json.loads(body)["error"]
    for method in ("POST", "PUT", "DELETE"):
        assert get(base + "api/runs", method=method)[0] == 405
    status, _, body = get(base + "api/runs", headers={"Host": "attacker.example:80"})
    assert status == 403  # a page elsewhere cannot reach it through DNS rebinding
    files = sorted(p.name for p in finished_run.iterdir())
    before = (finished_run / "archive.sqlite").read_bytes()
    for path in ("api/run/0/tree", "api/run/0/islands", "api/run/0/pareto", "api/run/0/curve", "api/run/0/choices"):
        assert get(base + path)[0] == 200
    assert (finished_run / "archive.sqlite").read_bytes() == before
    assert sorted(p.name for p in finished_run.iterdir()) == files


def test_transcript_shows_the_conversation_without_keys(server, finished_run: Path) -> None:
    good, _ = hostile_ids(finished_run)
    write_transcript(finished_run, good)
    status, _, body = get(server.url + f"api/run/0/transcript/{good[:16]}")
    conversation = json.loads(body)["conversation"]
    assert status == 200 and FAKE_KEY not in body.decode() and "api_key" not in body.decode()
    call = conversation["calls"][0]
    assert call["messages"][1]["content"] == "Improve this. Authorization: ***"
    assert call["reply"].startswith("Here is the patch <script>") and call["reply"].endswith("my key ***")
    (finished_run / "transcript.jsonl").unlink()
    assert json.loads(get(server.url + f"api/run/0/transcript/{good}")[2])["conversation"] is None


def test_server_follows_a_campaign_that_is_writing(tmp_path: Path) -> None:
    campaign = LiveCampaign(tmp_path, "following", evaluations=30).start(3)
    srv = start_in_thread(make_sources([campaign.run_dir]))
    try:
        token = json.loads(get(srv.url + "api/run/0/changes")[2])["token"]
        count = json.loads(get(srv.url + "api/run/0/summary")[2])["programs"]
        campaign.release(5)
        campaign.wait_for(lambda n: n >= count + 5)
        assert json.loads(get(srv.url + "api/run/0/changes")[2])["token"] != token
        assert json.loads(get(srv.url + "api/run/0/summary")[2])["programs"] >= count + 5
    finally:
        srv.shutdown()
        srv.server_close()
        campaign.finish()
    archive = Archive(campaign.run_dir / "archive.sqlite")
    try:
        assert archive.check_integrity() == [] and archive.events("run_finished")  # never locked out
    finally:
        archive.close()


def test_non_finite_numbers_are_sent_as_null(tmp_path: Path) -> None:
    from evolve.archive import ProgramRecord, Step, program_id
    from evolve.task import Result

    code = "def solve():\n    return [0.0]\n"
    archive = Archive(tmp_path / "archive.sqlite")
    pid = program_id(code)
    archive.put_program(ProgramRecord(id=pid, code=code), Result(
        correct=True, metrics={"runtime_s": float("inf")}, scores={"score": 1.0}, scorer="score",
        per_window=[{"window": 0, "score": float("nan")}]))
    archive.apply_step(Step(idx=0, kind="seed", program_id=pid), version=(pid, 1.0))
    archive.close()
    srv = start_in_thread(make_sources([tmp_path]))
    try:
        status, _, body = get(srv.url + f"api/run/0/program/{pid}")
    finally:
        srv.shutdown()
        srv.server_close()
    result = json.loads(body)["result"]
    assert status == 200 and result["metrics"]["runtime_s"] is None and result["per_window"][0]["score"] is None


def test_ui_command_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert cli_main(["ui", str(tmp_path / "nowhere")]) == 2
    assert cli_main(["ui", "--root", str(tmp_path)]) == 2
    assert cli_main(["ui", str(tmp_path), "--port", "70000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "no run at" in err[0] and "no runs under" in err[1]


def test_unknown_metric_flag_is_one_line(finished_run: Path, capsys) -> None:
    assert cli_main(["ui", str(finished_run), "--balance-key", "nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --balance-key nosuch: finished stores no such metric; choose one of size, runtime_s"]


def test_campaign_summary_names_the_ui_command(tmp_path: Path) -> None:
    from evolve.loop import Summary

    lines = campaign_cli.summary_lines(Summary(run_dir=tmp_path / "run", reason="test"))
    assert f"eplb-evolve ui {tmp_path / 'run'} --open" in "\n".join(lines)


# ---- a real browser ------------------------------------------------------------------------------------------
def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser_page():
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium; `make test` installs it): "
                    "the in-browser checks of the web view are skipped")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]'): the in-browser checks are skipped")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        try:
            yield page, problems
        finally:
            browser.close()


def test_browser_follows_a_live_campaign(tmp_path: Path, browser_page) -> None:
    page, problems = browser_page
    campaign = LiveCampaign(tmp_path, "browsed", evaluations=60).start(8)
    srv = start_in_thread(make_sources([campaign.run_dir]))
    try:
        page.goto(srv.url)
        page.wait_for_selector("#programs tbody tr")
        shown = int(page.text_content("#program-count").split()[0])
        assert shown >= 8

        # new programs appear without a reload, marked as new
        campaign.release(12)
        total = campaign.wait_for(lambda n: n >= shown + 12)
        page.wait_for_function("n => parseInt(document.getElementById('program-count').textContent) >= n", arg=total)
        page.wait_for_selector("#programs tbody tr.new")
        assert "live" in page.text_content("#live")

        # markup in code, patch name and error is text: no script ran, no image was made
        good, bad = hostile_ids(campaign.run_dir)
        write_transcript(campaign.run_dir, good)
        page.fill("input[name=error]", "onerror")
        page.wait_for_function("() => document.querySelectorAll('#programs tbody tr').length === 1")
        assert HOSTILE in page.text_content("#programs tbody td.error-cell")
        page.goto(srv.url + f"#/r/0/p/{good}")
        page.wait_for_selector("#program-code")
        assert HOSTILE in page.text_content("#program-code")
        assert HOSTILE in page.text_content(".patch-name")
        page.wait_for_selector("#transcript .reply-text")
        assert HOSTILE in page.text_content("#transcript .reply-text")
        assert FAKE_KEY not in page.content()
        page.goto(srv.url + f"#/r/0/p/{bad}")
        page.wait_for_selector("#program-error")
        assert HOSTILE in page.text_content("#program-error")
        assert page.evaluate("() => window.__pwned") is None
        assert page.evaluate("() => document.querySelectorAll('main script, main img').length") == 0

        # a program page: its diff against its parent, then against the seed
        page.wait_for_selector("#diff pre.diff span.add")
        assert "raise ValueError" in page.text_content("#diff pre.diff span.add")
        page.select_option("#diff-against", "seed")
        page.select_option("#diff-mode", "split")
        page.wait_for_selector("#diff table.diff td.add")

        # the genealogy: click the best program's node on the canvas, land on its page
        campaign.release(6)
        total = campaign.wait_for(lambda n: n >= total + 6)  # then the campaign waits at the gate: the tree holds still
        page.click("nav a:has-text('genealogy')")
        page.wait_for_function("n => window.eplbTree && window.eplbTree.nodes().length === n", arg=total)
        best = json.loads(get(srv.url + "api/run/0/summary")[2])["best"]["id"]
        page.wait_for_function("id => window.eplbTree.getElementById(id).length === 1", arg=best)
        page.evaluate("id => window.eplbTree.center(window.eplbTree.getElementById(id))", best)
        box = page.locator("#tree").bounding_box()
        spot = page.evaluate("id => window.eplbTree.getElementById(id).renderedPosition()", best)
        if os.environ.get("EPLB_EVOLVE_UI_SCREENSHOT"):
            page.evaluate("() => window.eplbTree.fit(undefined, 30)")
            page.wait_for_timeout(300)
            page.screenshot(path=os.environ["EPLB_EVOLVE_UI_SCREENSHOT"])
            page.evaluate("id => window.eplbTree.zoom(1) && window.eplbTree.center(window.eplbTree.getElementById(id))",
                          best)
            spot = page.evaluate("id => window.eplbTree.getElementById(id).renderedPosition()", best)
        page.mouse.click(box["x"] + spot["x"], box["y"] + spot["y"])
        page.wait_for_function("id => location.hash.endsWith('/p/' + id)", arg=best)
        page.wait_for_selector("#program-code")
        assert page.text_content("#program-id") == best[:16]

        # the other views draw
        for tab, selector in (("islands", "#islands-plot svg circle"),
                              ("balance vs runtime", "#pareto-plot svg circle")):
            page.click(f"nav a:has-text('{tab}')")
            page.wait_for_selector(selector)
        page.screenshot(path=str(tmp_path / "ui.png"))
        assert (tmp_path / "ui.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        srv.shutdown()
        srv.server_close()
        campaign.finish()
    assert problems == []  # no script error, no Content-Security-Policy violation


def test_browser_compares_two_runs(tmp_path: Path, finished_run: Path, browser_page) -> None:
    page, problems = browser_page
    other = LiveCampaign(tmp_path, "second", evaluations=15).start(1)
    other.finish()
    srv = start_in_thread(make_sources([finished_run, other.run_dir]))
    try:
        page.goto(srv.url + "#/compare/0/1")
        page.wait_for_selector("#compare-plot svg path")
        page.wait_for_selector("#compare-diff table.diff")
        assert "finished" in page.text_content("#view .cols")
    finally:
        srv.shutdown()
        srv.server_close()
    assert problems == []
