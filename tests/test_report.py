"""Run reports and promotion, on a tiny archive built with the archive's own API."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from evaluator.task import EplbTask, EvalOptions
from evaluator.traces import save_npz
from evolve import report
from evolve.archive import Archive, ProgramRecord, Step, program_id
from evolve.cli import main as cli_main
from tests.evaluator_helpers import REPO, SMALL, skewed_trace

BROKEN = "def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):\n    return None\n"
# (program, parent, patch name, cost); None as program: a proposal that failed to apply
LINEAGE = [
    ("seed", None, "", 0.0),
    ("greedy_snake", "seed", "global greedy replication with snake dealing", 0.01),
    ("broken", "seed", "return nothing", 0.02),
    (None, "seed", "", 0.01),
    ("hybrid_tail", "greedy_snake", "adaptive Sainte-Lague tail", 0.01),
    ("hybrid_tail_swap", "hybrid_tail", "bounded swaps against the two lightest GPUs", 0.03),
]


def code_of(name: str) -> str:
    return BROKEN if name == "broken" else (REPO / "candidates" / f"{name}.py").read_text()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished run: seed, two improvements, a sibling, an incorrect child and a failed proposal."""
    root = tmp_path_factory.mktemp("report")
    trace = save_npz(skewed_trace(steps=500), root / "small.npz")
    options = {**SMALL, "dataset": str(trace), "timeout_s": 20.0, "reference_calls": 1}
    task = EplbTask(EvalOptions.from_dict(options))
    run = root / "run"
    run.mkdir()
    archive = Archive(run / "archive.sqlite")
    archive.set_meta(config={"task": {"factory": "evaluator.task:make_task", "options": options}},
                     task="eplb", task_stamp=json.loads(json.dumps(task.stamp())), seed=0)
    ids: dict[str, str] = {}
    best = None
    for idx, (name, parent, patch, cost) in enumerate(LINEAGE):
        parent_id = ids.get(parent or "")
        if name is None:
            archive.apply_step(Step(idx=idx, kind="failed", parent_id=parent_id, error="SEARCH text not found",
                                    cost=cost))
            continue
        code = code_of(name)
        pid = ids[name] = program_id(code)
        generation = 0 if parent is None else archive.program(parent_id).generation + 1
        record = ProgramRecord(id=pid, code=code, parent_id=parent_id, generation=generation, patch_name=patch,
                               proposer="mutator", cost=cost)
        result = task.evaluate(code)
        archive.put_program(record, result)
        version = None
        if result.correct and (best is None or result.score > best):
            best, version = result.score, (pid, result.score)
        archive.apply_step(Step(idx=idx, kind="seed" if parent is None else "evaluated", program_id=pid,
                                parent_id=parent_id, cost=cost, proposer="mutator"), version=version)
    assert archive.check_integrity() == []
    archive.close()
    return run


def test_report_from_the_archive_alone(run_dir: Path, tmp_path: Path) -> None:
    files = report.build_report(run_dir, "balancedness_gpu", "runtime_median_s", "balancedness_gpu",
                                [report.Reference("ceiling", 1.0)], out_dir=tmp_path)
    assert len(files.figures) == 4
    for path in files.figures.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = files.html.read_text()
    assert page.count('src="data:image/png;base64,') == 4
    assert "<script" not in page and "http" not in page.split("<body>")[1].split("<pre>")[0]
    assert "bounded swaps against the two lightest GPUs" in page  # best program's patch, in the summary
    assert "def refine_by_swaps" in page  # the best program's code
    assert 'class="add"' in page and 'class="del"' in page  # its diff against the seed
    run = report.load_run(run_dir)
    assert run.programs[run.best_id].patch_name == "bounded swaps against the two lightest GPUs"
    assert [r.patch_name or "seed" for r in run.lineage(run.best_id)] == [
        "seed", "global greedy replication with snake dealing", "adaptive Sainte-Lague tail",
        "bounded swaps against the two lightest GPUs"]


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [(1.0, 0.5), (2.0, 0.7), (1.5, 0.4), (3.0, 0.7), (0.5, 0.3), (4.0, 0.9)]
    assert report.pareto_front(points) == [4, 0, 1, 5]


def test_report_command_adds_leaderboard_rows(run_dir: Path, capsys) -> None:
    assert cli_main(["report", str(run_dir), "--references", "greedy_snake"]) == 0
    out = capsys.readouterr().out
    page = (run_dir / "report" / "report.html").read_text()
    assert f"report: {run_dir / 'report' / 'report.html'}" in out
    assert "Leaderboard" in page and "ceiling (lower bounds)" in page and "oracle (best (archive" in page
    assert "seed (archive)" in page and "greedy_snake" in page
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert (summary["evaluations"], summary["correct"], summary["correct_fraction"]) == (4, 3, 0.75)
    assert summary["best"]["score"] > summary["seed_score"] and summary["dataset"]["split"]


def test_report_without_its_dataset_still_draws_the_archive(run_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from evaluator.results import cli as results_cli
    from evolve.errors import UserError

    def missing(meta):
        raise UserError("small.npz: no such trace file")

    monkeypatch.setattr(results_cli, "run_task", missing)
    assert cli_main(["report", str(run_dir), "--out", str(tmp_path)]) == 0
    assert "warning: no leaderboard rows: small.npz: no such trace file" in capsys.readouterr().err
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "no leaderboard rows" in page


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


CHECK = """<script>window.addEventListener('load', function () {
  var diff = document.querySelector('pre.diff'), font = diff ? parseFloat(getComputedStyle(diff).fontSize) : 0;
  var out = {
    images: Array.from(document.images).map(function (i) { return i.naturalWidth; }),
    page_overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    hidden_columns: Array.from(document.querySelectorAll('.wide'))
        .map(function (d) { return d.scrollWidth - d.clientWidth; }),
    diff_lines: diff ? diff.querySelectorAll('span').length : 0,
    diff_height: diff ? diff.getBoundingClientRect().height : 0,
    diff_font: font,
    headings: Array.from(document.querySelectorAll('h2')).map(function (h) { return h.textContent; })
  };
  var p = document.createElement('pre'); p.id = 'check'; p.textContent = JSON.stringify(out);
  document.body.appendChild(p);
});</script>"""
WINDOW = "--window-size=1200,900"  # a laptop screen


def render(page: Path, screenshot: Path | None = None) -> tuple[dict, list[str]]:
    """Load `page` (with a probe appended) in headless Chromium: what the probe measured, console lines."""
    browser = find_chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get update && apt-get install -y chromium; "
                    "`make test` installs it): the report's in-browser rendering check is skipped")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
        proc = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp}/profile", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
             WINDOW, "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=120,
        )
        if screenshot is not None:
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--hide-scrollbars",
                            f"--user-data-dir={tmp}/shot", WINDOW, f"--screenshot={screenshot}", page.as_uri()],
                           capture_output=True, timeout=120)
    found = re.search(r'<pre id="check">(.*?)</pre>', proc.stdout)
    assert found, f"the page did not finish loading (chromium exit {proc.returncode})"
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(found.group(1)), console


def test_report_renders_in_a_browser(run_dir: Path, tmp_path: Path) -> None:
    assert cli_main(["report", str(run_dir), "--references", "greedy_snake", "--out", str(tmp_path)]) == 0
    shot = tmp_path / "screenshot.png"
    seen, console = render(tmp_path / "report.html", screenshot=shot)
    assert console == []
    assert len(seen["images"]) == 4 and all(w > 300 for w in seen["images"])  # every figure decoded
    assert seen["page_overflow"] <= 0 and seen["hidden_columns"] == [0]  # the leaderboard fits: no column hidden
    single_spaced = seen["diff_lines"] * seen["diff_font"] * 1.6 + 40
    assert seen["diff_lines"] > 5 and seen["diff_height"] < single_spaced
    headings = seen["headings"]
    assert headings.index("Best program: its changes against the seed") < len(headings)
    page = (tmp_path / "report.html").read_text()
    assert page.index('<pre class="diff">') < page.index("<details><summary>the whole program")  # diff first
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_browser_check_catches_a_broken_page(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><div class="wide" style="overflow-x:auto"><table><tr>'
                    + "<td>wide-column-text</td>" * 200 + '</tr></table></div><pre class="diff"><span>a</span>\n\n'
                    '<span>b</span>\n\n<span>c</span>\n\n<span>d</span>\n\n<span>e</span>\n\n<span>f</span></pre>'
                    '<img src="data:image/png;base64,AAAA"><script>nosuch();</script></body></html>')
    seen, console = render(page)
    assert seen["images"] == [0] and any("nosuch" in line for line in console)
    assert seen["hidden_columns"][0] > 0  # a table wider than its box is seen
    assert seen["diff_height"] > seen["diff_lines"] * seen["diff_font"] * 1.6 + 40  # and a double-spaced diff


def test_figures_name_their_data_and_runtimes_are_timed_in_one_session(run_dir: Path, tmp_path: Path,
                                                                       monkeypatch) -> None:
    titles: list[str] = []
    save = report._save

    def record(fig, path):
        titles.append(" ".join([fig._suptitle.get_text() if fig._suptitle else ""] + [a.get_title() for a in fig.axes]))
        return save(fig, path)

    monkeypatch.setattr(report, "_save", record)
    pareto = report.pareto_figure
    drawn: list = []
    monkeypatch.setattr(report, "pareto_figure",
                        lambda *a, **k: drawn.append(k.get("timing") or a[-1]) or pareto(*a, **k))
    assert cli_main(["report", str(run_dir), "--references", "greedy_snake", "--out", str(tmp_path)]) == 0
    label = report.data_label(report.load_run(run_dir))
    assert label.startswith("skewed-0 (") and len(titles) == 3  # progress, per window, lineage
    assert all(label in title for title in titles)
    timing = drawn[0]
    run = report.load_run(run_dir)
    assert isinstance(timing, report.Timing) and {run.seed_id, run.best_id} <= set(timing.points)
    assert "in one session" in timing.note and "skewed-0" in timing.note
    fig = report.pareto_plot(run, "balancedness_gpu", "runtime_median_s", [], timing)
    assert label in fig.axes[0].get_title() and any("in one session" in t.get_text() for t in fig.texts)
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in fig.axes[0].get_xticklabels() if t.get_text() and t.get_visible()]
    assert boxes and not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])  # no "8090"
    front = [line for line in fig.axes[0].get_lines() if line.get_label() == "Pareto front"][0]
    assert front.get_drawstyle() == "steps-post"  # a staircase through real programs, not slopes between them
    assert len(front.get_xdata()) == len(report.pareto_front(list(timing.points.values())))
    plt_close(fig)
    assert report.inherited_docstring('"""Seed."""\nx = 1\n', '"""Seed."""\nx = 2\n')
    assert not report.inherited_docstring('"""Seed."""\nx = 1\n', '"""Tuned."""\nx = 2\n')


def plt_close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


# ---- promote -------------------------------------------------------------------------------------------------
def test_promote_copies_the_program_with_its_origin(run_dir: Path, tmp_path: Path, capsys) -> None:
    pid = program_id(code_of("hybrid_tail_swap"))
    assert cli_main(["promote", str(run_dir), pid[:10], "--candidates-dir", str(tmp_path)]) == 0
    target = tmp_path / "bounded_swaps_against_the_two_lightest_gpus.py"
    assert f"promoted {pid[:12]} to {target}" in capsys.readouterr().out
    text = target.read_text()
    header, code = text.split("\n\n", 1)[0], text.split("\n\n", 1)[1]
    assert all(line.startswith("# ") for line in header.splitlines())
    assert program_id(code) == pid  # the code below the header is the archived program, byte for byte
    assert f"program {pid}" in header and str(run_dir) in header
    assert ("lineage, seed first: seed -> global greedy replication with snake dealing -> adaptive Sainte-Lague "
            "tail" in header)
    assert "native=" in header and "adrs-leaderboard=" in header and "sha256" in header
    options = EvalOptions(**SMALL, dataset=str(run_dir.parent / "small.npz"), reference_calls=0)
    assert EplbTask(options).evaluate(text).correct  # the header keeps it a working program

    assert cli_main(["promote", str(run_dir), pid[:10], "--candidates-dir", str(tmp_path)]) == 2
    assert "exists" in capsys.readouterr().err
    assert cli_main(["promote", str(run_dir), pid[:10], "--name", "winner", "--candidates-dir", str(tmp_path)]) == 0
    assert (tmp_path / "winner.py").is_file()


def test_promote_and_report_errors_are_one_line(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert cli_main(["promote", str(run_dir), "zzzz", "--candidates-dir", str(tmp_path)]) == 2
    assert "no program with id starting 'zzzz'" in capsys.readouterr().err
    assert cli_main(["promote", str(tmp_path / "nowhere"), "abc"]) == 2
    assert cli_main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: no run at") for line in err)


def test_report_shows_the_other_splits_beside_search(run_dir: Path, tmp_path: Path) -> None:
    from evaluator.results import leaderboard as lb
    from evaluator.results.cli import report_standing, split_results

    task = EplbTask(EvalOptions(dataset="deepseek-v2-lite", max_windows=3, reference_calls=0))
    run = report.load_run(run_dir)
    shipped = [lb.Program(name, Path(""), code_of(name)) for name in ("greedy_snake", "hybrid_tail")]
    found = report_standing(task, run, shipped)
    splits = split_results(found)
    # new traffic from the same router, and another router model: the search saw neither
    assert [s.label for s in splits] == ["deepseek-v2-lite (holdout split)", "deepseek-v2-lite (holdout-model split)"]
    assert splits[0].seed.correct and splits[0].best.correct
    files = report.build_report(run_dir, "balancedness_gpu", "runtime_median_s", "balancedness_gpu", out_dir=tmp_path,
                                splits=splits, extra_rows=found.rows(), extra_data=found.to_data())
    assert "balancedness_gpu on every split" in files.figures
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["splits"]["deepseek-v2-lite (holdout split)"]["best"] == splits[0].best.score
    page = files.html.read_text()
    assert "deepseek-v2-lite (holdout split)" in page
    # the best (hybrid_tail_swap) against the seed and the two shipped candidates, on both splits
    standing = summary["standing"]
    assert [s["split"] for s in standing["splits"]] == ["holdout", "holdout-model"]
    for s in standing["splits"]:
        names = [e["name"] for e in s["entries"]]
        assert names[:2] == ["best", "seed"] and set(names[2:]) == {"greedy_snake", "hybrid_tail"}
        assert s["fastest"] in names[2:] and s["most_balanced"] in names[2:]
        by_name = {e["name"]: e for e in s["entries"]}
        # the roles are what the measured numbers say
        assert by_name[s["fastest"]]["ms_per_call"] == min(by_name[n]["ms_per_call"] for n in names[2:])
        assert by_name[s["most_balanced"]]["balance"] == max(by_name[n]["balance"] for n in names[2:])
        d = s["balance_difference"]
        assert d["low"] <= d["value"] <= d["high"]
        assert abs(d["value"] - (by_name["best"]["balance"] - by_name[s["most_balanced"]]["balance"])) < 1e-9
        assert s["verdict"] == (s["time_ratio"]["value"] <= 1.0 and d["high"] >= 0.0)
        line = s["verdict_line"]
        assert line.startswith(f"best is no slower than {s['fastest']} and not significantly less balanced than "
                               f"{s['most_balanced']} on {s['split']}: ") and line.endswith(("yes", "no"))
        assert html.escape(line) in page


def test_make_run_prints_best_against_the_shipped_candidates_with_a_verdict(tmp_path: Path) -> None:
    """`make run` in small: a campaign of a few children on a small dataset, then its report. The printed
    summary, summary.json and report.html all carry the best against the seed, the most balanced and the
    fastest shipped candidate on both unseen splits (balance, ms per call, speed against the reference),
    the paired interval and the one-line verdict."""
    import os
    import sys

    out = tmp_path / "run"
    args = [sys.executable, str(REPO / "run_evolution.py"), "--dataset", "deepseek-v2-lite", "--max-evaluations", "4",
            "--workers", "1", "--seed", "1", "--out", str(out), "--set", "task.options.max_windows=3"]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout
    summary = json.loads((out / "report" / "summary.json").read_text())
    page = (out / "report" / "report.html").read_text()
    splits = summary["standing"]["splits"]
    assert [s["split"] for s in splits] == ["holdout", "holdout-model"]
    for s in splits:
        for e in s["entries"]:
            assert e["correct"] and 0 < e["balance"] <= 1 and e["ms_per_call"] > 0 and e["x_reference"] > 0
        shipped = {p.stem for p in (REPO / "candidates").glob("*.py")} - {"seed"}
        assert {e["name"] for e in s["entries"]} == {"best", "seed"} | shipped
        for label in ("best", "seed", s["fastest"], s["most_balanced"]):
            row = next(line for line in printed.splitlines() if line.startswith(f"{s['split']}: {label}"))
            assert "balancedness_gpu" in row and "ms per call" in row and "the reference's speed" in row
        interval = f"{s['split']}: best - {s['most_balanced']}: balancedness_gpu"
        assert interval in printed and "95% interval" in printed and f"x {s['fastest']}'s" in printed
        assert f"{s['split']}: verdict: {s['verdict_line']}" in printed
        assert html.escape(s["verdict_line"]) in page
    assert "best is no slower than" in printed and "on holdout: " in printed and "on holdout-model: " in printed
