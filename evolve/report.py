"""Campaign reports: figures as PNG and one self-contained `report.html` per run, read from its archive.

Nothing here knows the problem: it reads programs, results and steps from the archive and plots the
primary score, one balance-like metric against one runtime-like metric, and per-window detail, under the
keys the caller names. Problem-specific extras (reference points, a leaderboard table) come in as plain
data. The HTML embeds its figures as base64 data URIs and loads nothing else, so it can be mailed,
archived or opened from any folder.
"""
from __future__ import annotations

import ast
import base64
import difflib
import html
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from evolve import syntax  # noqa: E402
from evolve.archive import Archive, ProgramRecord, Step  # noqa: E402
from evolve.errors import UserError  # noqa: E402
from evolve.members import member_rows  # noqa: E402
from evolve.scrub import scrub, scrub_data  # noqa: E402
from evolve.task import Result  # noqa: E402

ARCHIVE_NAME = "archive.sqlite"
RESULTS_ROOT = Path("results")


@dataclass
class Reference:
    """A program or bound to mark on the Pareto figure; `runtime_s=None` draws a horizontal line."""

    label: str
    balance: float
    runtime_s: float | None = None


@dataclass
class Timing:
    """Runtimes measured for the report in one session (one warm evaluator, one after the other), so the
    points of a figure are comparable. `points`: program id -> (runtime_s, balance); `note` says when and how."""

    points: dict[str, tuple[float, float]]
    note: str


@dataclass
class SplitResults:
    """Seed and best scored on one more split of the data (holdout, another router model's), for the report."""

    label: str  # e.g. "deepseek-v3 (holdout split)"
    seed: Result | None
    best: Result | None


@dataclass
class RunView:
    """Everything a report needs from one run, read once (the archive is closed afterwards)."""

    run_dir: Path
    steps: list[Step]
    programs: dict[str, ProgramRecord]
    results: dict[str, Result]
    versions: list[dict[str, Any]]
    events: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def seed_id(self) -> str | None:
        return next((s.program_id for s in self.steps if s.kind == "seed"), None)

    @property
    def best_id(self) -> str | None:
        return self.versions[-1]["program_id"] if self.versions else self.seed_id

    def score(self, pid: str | None) -> float | None:
        result = self.results.get(pid or "")
        return result.score if result is not None and result.correct else None

    def lineage(self, pid: str) -> list[ProgramRecord]:
        """Root first, down to `pid`."""
        chain, seen, current = [], set(), pid
        while current and current in self.programs and current not in seen:
            seen.add(current)
            chain.append(self.programs[current])
            current = self.programs[current].parent_id
        return list(reversed(chain))


def resolve_run(text: str, results: Path = RESULTS_ROOT) -> Path:
    """A run directory from a path or a name under `results` (both relative to the working directory)."""
    for candidate in (Path(text), results / text):
        if (candidate / ARCHIVE_NAME).is_file():
            return candidate
    raise UserError(f"no run at {text} (no {ARCHIVE_NAME} there or under {results}/); list runs with `eplb-evolve "
                    "runs`")


def load_run(run_dir: Path) -> RunView:
    archive = Archive(run_dir / ARCHIVE_NAME)
    try:
        ids = archive.program_ids()
        programs = {pid: archive.program(pid) for pid in ids}
        results = {pid: r for pid in ids if (r := archive.result(pid)) is not None}
        meta = {k: archive.meta(k) for k in ("config", "task", "task_stamp", "seed", "created_at", "elapsed_s")}
        return RunView(run_dir, archive.steps(), programs, results, archive.versions(), archive.events(), meta)
    finally:
        archive.close()


# ---- figures -----------------------------------------------------------------------------------------
def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def progress_figure(run: RunView, path: Path) -> Path:
    """Best score so far against evaluations, and against proposer cost (tokens or time when cost is 0)."""
    xs_eval, xs_cost, scores, best_xs, best_cost, best = [], [], [], [], [], []
    evaluations, spent, tokens = 0, 0.0, 0
    start = run.steps[0].applied_at if run.steps else 0.0
    by_cost = _cost_axis(run.steps)
    running: float | None = None
    for step in run.steps:
        evaluations += step.kind == "evaluated"
        spent += step.cost
        tokens += step.tokens
        x_cost = {"cost": spent, "tokens": tokens, "minutes": (step.applied_at - start) / 60}[by_cost[0]]
        score = run.score(step.program_id) if step.kind in ("seed", "evaluated") else None
        if score is None:
            continue
        xs_eval.append(evaluations)
        xs_cost.append(x_cost)
        scores.append(score)
        if running is None or score > running:
            running = score
        best_xs.append(evaluations)
        best_cost.append(x_cost)
        best.append(running)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, xs, bx, label in ((axes[0], xs_eval, best_xs, "evaluations"), (axes[1], xs_cost, best_cost, by_cost[1])):
        ax.scatter(xs, scores, s=10, color="0.7", label="each correct program")
        ax.step(bx, best, where="post", color="tab:blue", linewidth=2, label="best so far")
        ax.set_xlabel(label)
        ax.set_ylabel(_score_label(run))
        ax.grid(alpha=0.3)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(loc="lower right", fontsize=8)
    axes[0].set_title("best score over evaluations")
    axes[1].set_title(f"best score over {by_cost[0]}")
    fig.suptitle(f"search progress on {data_label(run)}", fontsize=11)
    return _save(fig, path)


def _cost_axis(steps: list[Step]) -> tuple[str, str]:
    if sum(s.cost for s in steps) > 0:
        return "cost", "proposer cost ($)"
    if sum(s.tokens for s in steps) > 0:
        return "tokens", "proposer tokens (in + out)"
    return "minutes", "wall-clock minutes (no proposer cost recorded)"


def _score_label(run: RunView) -> str:
    stamp = run.meta.get("task_stamp") or {}
    return f"score ({stamp.get('scorer', 'primary')})"


def data_label(run: RunView) -> str:
    """The data a run was scored on, as every figure names it: `NAME (SPLIT split)`."""
    dataset = (run.meta.get("task_stamp") or {}).get("dataset")
    if isinstance(dataset, dict) and dataset.get("name"):
        return f"{dataset['name']} ({dataset.get('split', '?')} split)"
    return str(run.meta.get("task") or "the run's task")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (lower runtime, higher balance), by runtime ascending."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


CAMPAIGN_TIMING = ("runtimes as measured during the campaign, each program in its own evaluation under the load "
                   "of that moment: compare them with care")


def pareto_plot(run: RunView, balance_key: str, runtime_key: str,
                references: list[Reference] = (),  # type: ignore[assignment]
                timing: Timing | None = None) -> plt.Figure | None:
    """Balance against runtime: every correct program (or, with `timing`, the programs timed for the
    report), the front drawn as steps, seed, best and references marked, and how runtimes were measured."""
    ids, points = [], []
    if timing is not None:
        for pid, (runtime_s, balance) in timing.points.items():
            ids.append(pid)
            points.append((runtime_s * 1e3, balance))
    else:
        for pid, r in run.results.items():
            if r.correct and balance_key in r.metrics and runtime_key in r.metrics:
                ids.append(pid)
                points.append((r.metrics[runtime_key] * 1e3, r.metrics[balance_key]))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5.6))
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=12, color="0.65", label="programs")
    front = pareto_front(points)
    xs, ys = [points[i][0] for i in front], [points[i][1] for i in front]
    # the front is a staircase: between two front programs the faster one's balance is all one gets
    ax.step(xs, ys, where="post", color="tab:blue", linewidth=1.5, label="Pareto front")
    ax.scatter(xs, ys, s=18, color="tab:blue", zorder=3)
    for pid, marker, color, label in ((run.seed_id, "*", "tab:red", "seed"), (run.best_id, "D", "tab:green", "best")):
        if pid in ids:
            x, y = points[ids.index(pid)]
            ax.scatter([x], [y], marker=marker, s=140, color=color, zorder=5, label=label)
    levels = 0
    for n, ref in enumerate(references):
        if ref.runtime_s is None:
            ax.axhline(ref.balance, linestyle="--", color="tab:purple", linewidth=1)
            left = levels % 2 == 0  # neighbouring levels label at opposite ends: close lines keep legible labels
            ax.annotate(ref.label, (0.01 if left else 0.99, ref.balance), xycoords=("axes fraction", "data"),
                        fontsize=8, color="tab:purple", va="bottom", ha="left" if left else "right")
            levels += 1
        else:
            ax.scatter([ref.runtime_s * 1e3], [ref.balance], marker="^", s=60, color="tab:orange", zorder=4)
            ax.annotate(ref.label, (ref.runtime_s * 1e3, ref.balance), fontsize=8, xytext=(4, 4 if n % 2 else -11),
                        textcoords="offset points")  # alternate above and below: neighbours rarely collide
    ax.set_xscale("log")
    # labels on 1-2-5 ticks only: labelling every minor tick of a log axis runs them together ("8090")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"runtime per call, ms (log scale; {runtime_key})")
    ax.set_ylabel(balance_key)
    ax.set_title(f"balance against runtime on {data_label(run)} (up and left is better)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=8)
    note = timing.note if timing is not None else CAMPAIGN_TIMING
    lines = _wrap(note, 120)
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, color="0.35", va="bottom")
    fig.tight_layout(rect=(0, 0.03 + 0.025 * len(lines), 1, 1))  # room below the axis label for the note
    return fig


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def pareto_figure(run: RunView, path: Path, balance_key: str, runtime_key: str,
                  references: list[Reference] = (),
                  timing: Timing | None = None) -> Path | None:  # type: ignore[assignment]
    fig = pareto_plot(run, balance_key, runtime_key, references, timing)
    if fig is None:
        return None
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def per_window_figure(run: RunView, path: Path, key: str) -> Path | None:
    """Per scored window: the best program against the seed."""
    series = []
    for pid, label, color in ((run.seed_id, "seed", "tab:red"), (run.best_id, "best", "tab:green")):
        r = run.results.get(pid or "")
        if r is not None and r.correct and r.per_window and key in r.per_window[0]:
            xs = [i if "member" in w else w.get("window", i) for i, w in enumerate(r.per_window)]  # a suite: in a row
            series.append((label, color, xs, [w[key] for w in r.per_window]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for label, color, xs, ys in series:
        ax.plot(xs, ys, "-o", markersize=3, color=color, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("scored window")
    ax.set_ylabel(key)
    ax.set_title(f"{key} per window on {data_label(run)}: best vs seed", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def lineage_figure(run: RunView, path: Path, max_children: int = 8) -> Path | None:
    """The chain from the seed to the best program (labelled with patch names) and its other children."""
    if not run.best_id:
        return None
    chain = run.lineage(run.best_id)
    children: dict[str, list[str]] = {}
    for pid, record in run.programs.items():
        if record.parent_id:
            children.setdefault(record.parent_id, []).append(pid)
    fig, ax = plt.subplots(figsize=(9, min(30.0, 1.2 + 0.55 * len(chain))))
    on_chain = {r.id for r in chain}
    lowest = len(chain) - 1
    for depth, record in enumerate(chain):
        others = [c for c in children.get(record.id, []) if c not in on_chain]
        lowest = max(lowest, depth + 1) if others else lowest
        for k, child in enumerate(others[:max_children]):
            x = -0.25 * (k + 1)  # siblings to the left, labels of the chain to the right
            ok = run.score(child) is not None
            ax.plot([0, x], [-depth, -depth - 1], color="0.85", linewidth=0.8, zorder=1)
            ax.scatter([x], [-depth - 1], s=14, color="0.55" if ok else "white", edgecolors="0.55", zorder=2)
        if len(others) > max_children:
            ax.annotate(f"+{len(others) - max_children}", (-0.25 * max_children, -depth - 1), xytext=(-14, -3),
                        textcoords="offset points", fontsize=7, color="0.4")
        if depth:
            ax.plot([0, 0], [-depth + 1, -depth], color="tab:green", linewidth=2, zorder=3)
        score = run.score(record.id)
        ax.scatter([0], [-depth], s=60, color="tab:green" if depth else "tab:red", zorder=4)
        name = record.patch_name or "seed"
        text = f"{name[:48]}  ({'incorrect' if score is None else f'{score:.4g}'})"
        ax.annotate(text, (0, -depth), xytext=(10, -3), textcoords="offset points", fontsize=8)
    ax.set_xlim(-0.25 * max_children - 0.4, 6.0)
    ax.set_ylim(-lowest - 0.5, 0.5)
    ax.axis("off")
    ax.set_title(f"lineage of the best program, scores on {data_label(run)}\n(green: ancestors; grey: their other "
                 "children, hollow if incorrect)", fontsize=10)
    return _save(fig, path)


def splits_figure(run: RunView, path: Path, key: str, splits: list[SplitResults]) -> Path | None:
    """Per window, best against seed on the search split (from the archive) and on each other split given."""
    panels = [(data_label(run), run.results.get(run.seed_id or ""), run.results.get(run.best_id or ""))]
    panels += [(s.label, s.seed, s.best) for s in splits]
    panels = [p for p in panels if any(r is not None and r.correct and r.per_window for r in p[1:])]
    if len(panels) < 2:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), sharey=True, squeeze=False)
    for ax, (label, seed, best) in zip(axes[0], panels):
        means = []
        for result, name, color in ((seed, "seed", "tab:red"), (best, "best", "tab:green")):
            if result is None or not result.correct or not result.per_window or key not in result.per_window[0]:
                continue
            xs = [w.get("window", i) for i, w in enumerate(result.per_window)]
            ys = [w[key] for w in result.per_window]
            ax.plot(xs, ys, "-o", markersize=2.5, color=color, label=f"{name} (mean {sum(ys) / len(ys):.4f})")
            means.append(name)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("scored window")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel(key)
    fig.suptitle(f"{key} per window, best vs seed, on each split (the search never saw the others)", fontsize=11)
    return _save(fig, path)


# ---- HTML --------------------------------------------------------------------------------------------
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; } td, th { padding: 2px 6px; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f6f6f6; vertical-align: bottom; } td { font-variant-numeric: tabular-nums; }
table.board { font-size: 0.72em; width: 100%; table-layout: auto; }
table.board th { white-space: normal; word-break: break-word; }
table.board td:first-child { word-break: break-word; } table.board td { max-width: 16em; }
pre { background: #f8f8f8; padding: 0.8em; overflow-x: auto; font-size: 0.8em; line-height: 1.35; margin: 0.5em 0; }
pre.diff span { display: block; white-space: pre; min-height: 1.35em; }
.add { color: #116611; background: #eaffea; } .del { color: #991111; background: #ffecec; } .hunk { color: #555; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #666; font-size: 0.85em; } .wide { overflow-x: auto; max-width: 100%; }
summary { cursor: pointer; color: #335; }
"""


def image_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def diff_html(old: str, new: str, old_name: str = "seed", new_name: str = "best") -> str:
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), old_name, new_name, lineterm="", n=3))
    if not lines:
        return "<p class=\"note\">identical to the seed</p>"
    out = []
    for line in lines:
        cls = ("hunk" if line.startswith("@@") else "add" if line.startswith("+")
               else "del" if line.startswith("-") else "ctx")
        out.append(f'<span class="{cls}">{html.escape(line) or " "}</span>')
    # one block per line and no newline between them: a newline as well would double the spacing
    return '<pre class="diff">' + "".join(out) + "</pre>"


def inherited_docstring(seed: str, best: str) -> bool:
    """True when the best program changed code but kept the seed's module docstring word for word."""
    try:
        old, new = ast.get_docstring(syntax.parse(seed)), ast.get_docstring(syntax.parse(best))
    except SyntaxError:
        return False
    return bool(old) and old == new and seed != best


def summary_rows(run: RunView, splits: list[SplitResults] = (),  # type: ignore[assignment]
                 extra_rows: list[tuple[str, str]] = ()) -> list[tuple[str, str]]:  # type: ignore[assignment]
    """The summary table of the report page: `summary_data`, written for eyes, then the application's
    `extra_rows` (for EPLB: the best against the seed and the shipped candidates on the other splits)."""
    d = summary_data(run, splits)
    dataset, best = d["dataset"], d["best"]
    rows = [
        ("run", d["run"]),
        ("task", f"{d['task'] or '-'}; scorer {d['scorer'] or '-'}; evaluator {d['evaluator_version'] or '-'}"),
        ("dataset", f"{dataset.get('name', '-')} ({dataset.get('split', '-')}), sha256 {dataset.get('sha256', '-')}"),
        ("steps", ", ".join(f"{k} {v}" for k, v in sorted(d["steps"].items())) or "none"),
        ("evaluations", f"{d['evaluations']} ({d['correct'] / max(1, d['evaluations']):.0%} correct)"),
        ("proposer cost", f"${d['cost_usd']:.2f}, {d['tokens']} tokens"),
        ("best program",
         f"{(best['program_id'] or '-')[:16]} ({best['patch']}, generation {best['generation']})"
         if best["patch"] is not None else "-"),
        ("best score",
         _fmt(best["score"]) + (f" (seed {_fmt(d['seed_score'])}, change {d['change']:+.6g})"
                                if d["change"] is not None else "")),
    ]
    if d["holdout"]:
        h = d["holdout"]
        rows.append(("holdout (end of run)",
                     f"{h.get('objective', '')}: best {_fmt(h.get('best'))} vs seed {_fmt(h.get('seed'))}"))
    for label, scores in d["splits"].items():
        b, s_ = scores["best"], scores["seed"]
        change = f", change {b - s_:+.6g}" if b is not None and s_ is not None else ""
        rows.append((label, f"best {_fmt(b)} vs seed {_fmt(s_)}{change} (scored for this report)"))
    return rows + list(extra_rows)


def summary_data(run: RunView, splits: list[SplitResults] = (),  # type: ignore[assignment]
                 extra_data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary as numbers and names (what `summary.json` holds): for scripts and papers, not eyes.
    `extra_data` (the application's, beside its `extra_rows`) goes under "standing"."""
    stamp = run.meta.get("task_stamp") or {}
    kinds: dict[str, int] = {}
    for s in run.steps:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    evaluated = [s for s in run.steps if s.kind == "evaluated"]
    correct = sum(1 for s in evaluated if run.score(s.program_id) is not None)
    best, seed = run.score(run.best_id), run.score(run.seed_id)
    record = run.programs.get(run.best_id or "")
    holdout = [e["detail"] for e in run.events if e["kind"] == "holdout"]
    return {
        "run": str(run.run_dir),
        "task": run.meta.get("task"),
        "scorer": stamp.get("scorer"),
        "evaluator_version": stamp.get("evaluator_version"),
        "dataset": stamp.get("dataset") or {},
        "steps": kinds,
        "evaluations": len(evaluated),
        "correct": correct,
        "correct_fraction": correct / len(evaluated) if evaluated else None,
        "cost_usd": sum(s.cost for s in run.steps),
        "tokens": sum(s.tokens for s in run.steps),
        "best": {"program_id": run.best_id, "patch": (record.patch_name or "seed") if record else None,
                 "generation": record.generation if record else None, "score": best},
        "seed_score": seed,
        "change": best - seed if best is not None and seed is not None else None,
        "holdout": holdout[-1] if holdout else None,
        "splits": {s.label: {"best": s.best.score if s.best is not None and s.best.correct else None,
                             "seed": s.seed.score if s.seed is not None and s.seed.correct else None} for s in splits},
        "members": member_rows(run.results.get(run.seed_id or ""), run.results.get(run.best_id or ""),
                               stamp.get("scorer") or ""),
        "standing": extra_data or {},
    }


def members_html(rows: list[dict[str, Any]]) -> list[str]:
    """A suite run's per-member table (seed and best on each member, from the archive); nothing otherwise."""
    if not rows:
        return []
    return ["<h2>Per suite member: seed and best</h2>",
            '<p class="note">each member scored during the campaign; the run\'s score aggregates these</p>',
            table_html(pd.DataFrame(rows))]


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.6g}" if isinstance(value, (int, float)) else str(value)


def table_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, escape=True, na_rep="-", border=0, float_format=lambda v: f"{v:.4f}",
                      classes="board")


def render_html(run: RunView, figures: dict[str, Path], leaderboard: pd.DataFrame | None = None,
                leaderboard_note: str = "", splits: list[SplitResults] = (),  # type: ignore[assignment]
                extra_rows: list[tuple[str, str]] = ()) -> str:  # type: ignore[assignment]
    """The report page: summary, figures, best program and its diff against the seed, leaderboard rows."""
    title = f"eplb-evolve report: {run.run_dir.name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<link rel="icon" href="data:,">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">generated {html.escape(time.strftime("%Y-%m-%d %H:%M:%S %Z"))}</p>',
        "<h2>Summary</h2><table>",
        *(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
          for k, v in summary_rows(run, splits, extra_rows)),
        "</table>",
    ]
    parts += members_html(summary_data(run, splits)["members"])
    parts += ["<h2>Figures</h2>"]
    for name, path in figures.items():
        parts.append(f"<h3>{html.escape(name)}</h3>{image_tag(path, name)}")
    has_table = leaderboard is not None and not leaderboard.empty
    if has_table or leaderboard_note:
        parts.append("<h2>Leaderboard</h2>")
        if leaderboard_note:
            parts.append(f'<p class="note">{html.escape(leaderboard_note)}</p>')
        if has_table:
            parts.append(f'<div class="wide">{table_html(leaderboard)}</div>')
    notes = [e for e in run.events if e.get("kind") == "meta_notes"]
    if notes:
        parts.append("<h2>Notes the model wrote on what worked</h2>")
        for e in notes[-5:]:
            parts.append(f'<p class="note">after proposal '
                         f'{e.get("idx")}</p><pre>{html.escape(str(e["detail"].get("notes", "")))}</pre>')
    best, seed = run.programs.get(run.best_id or ""), run.programs.get(run.seed_id or "")
    if best is not None:
        parts += ["<h2>Best program: its changes against the seed</h2>",
                  f'<p class="note">program {html.escape(best.id)}; patches along its lineage: '
                  + html.escape(" -> ".join(r.patch_name or "seed" for r in run.lineage(best.id))) + "</p>"]
        if seed is not None and inherited_docstring(seed.code, best.code):
            parts.append('<p class="note">Its module docstring is the seed\'s, inherited unchanged: it describes the '
                         "seed, not this program. The diff and the patch names say what changed.</p>")
        if seed is not None:
            parts.append(diff_html(seed.code, best.code))
        parts.append(f"<details><summary>the whole program ({len(best.code.splitlines())} lines)</summary>"
                     f"<pre>{html.escape(best.code)}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


@dataclass
class ReportFiles:
    html: Path
    figures: dict[str, Path]


def build_report(run_dir: Path, balance_key: str, runtime_key: str, window_key: str,
                 references: list[Reference] = (),  # type: ignore[assignment]
                 leaderboard: pd.DataFrame | None = None, leaderboard_note: str = "",
                 out_dir: Path | None = None, timing: Timing | None = None,
                 splits: list[SplitResults] = (),  # type: ignore[assignment]
                 extra_rows: list[tuple[str, str]] = (),  # type: ignore[assignment]
                 extra_data: dict[str, Any] | None = None) -> ReportFiles:
    """Write the figures and `report.html` into `out_dir` (default: the run's `report/` folder)."""
    run = load_run(run_dir)
    if not run.steps:
        raise UserError(f"{run_dir} has no steps yet; a report needs at least the evaluated seed")
    out = out_dir or run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    candidates = {
        "best score over evaluations and cost": progress_figure(run, out / "progress.png"),
        f"{balance_key} against runtime (Pareto front)": pareto_figure(run, out / "pareto.png", balance_key,
                                                                          runtime_key, list(references), timing),
        f"{window_key} per window: best vs seed": per_window_figure(run, out / "per_window.png", window_key),
        f"{window_key} on every split": splits_figure(run, out / "splits.png", window_key, list(splits)),
        "lineage of the best program": lineage_figure(run, out / "lineage.png"),
    }
    figures = {name: path for name, path in candidates.items() if path is not None}
    # the page shows code too
    page = scrub(render_html(run, figures, leaderboard, leaderboard_note, list(splits), list(extra_rows)))
    html_path = out / "report.html"
    tmp = html_path.with_name("report.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(html_path)
    (out / "summary.json").write_text(json.dumps(scrub_data(summary_data(run, list(splits), extra_data)), indent=2))
    return ReportFiles(html_path, figures)
