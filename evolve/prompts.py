"""Prompts: turn a `ProposalRequest` into chat messages for a model, within a size limit.

A prompt holds the problem statement (from the Task), the patch format rules, the parent's code with its
metrics and feedback, the errors of this parent's recent failed children, and a few inspirations from
the archive. Phrasing and emphasis vary at random, seeded by `request.seed`, so the model does not settle
on one kind of edit; the same request always gives the same messages, which is what lets a transcript be
replayed by prompt hash.

Size: the prompt aims to stay under `max_chars` characters. Inspirations go first (the last one first),
then older failure lines, then the parent's feedback is shortened. The problem statement and the format
rules are never cut, nor is a parent of ordinary size: without them no patch can apply. A parent longer
than `PARENT_MAX_CHARS` (a program padded to megabytes) is shown in part, with a note: its EVOLVE blocks
whole, then as much of the start and end of the frozen code as fits; a patch still applies to the whole
program, and only the blocks may change anyway.

Every message is scrubbed of the environment's secrets (`evolve.scrub`) before it is returned, so no
text a program printed or a model wrote carries one to an endpoint.
"""
from __future__ import annotations

import functools
import hashlib
import json
import random
from typing import Any

from evolve.prompt_sections import (
    REWRITE_RULES,
    WORKED_EXAMPLE,
    crossover_section,
    history_section,
    metrics_line,
    mode_instruction,
    notes_section,
    standing_section,
)
from evolve.proposers.base import ProgramView, ProposalRequest
from evolve.scrub import scrub

Message = dict[str, str]

DEFAULT_MAX_CHARS = 48_000
MAX_METRICS = 16  # metrics shown per program; the rest are noise to a model
MAX_FAILURES = 5
PARENT_MAX_CHARS = 32_000  # a longer parent is shown in part (see `shown_code`)
FEEDBACK_MAX_CHARS = 16_000  # feedback beyond this is cut, however few lines it has
MARKER_MAX_CHARS = 200

FORMAT_RULES = """\
Answer with one patch in exactly this format:

<NAME>
short_snake_case_name
</NAME>

<DESCRIPTION>
What you changed and why you expect it to score better, in a few sentences.
</DESCRIPTION>

<DIFF>
<<<<<<< SEARCH
lines copied verbatim from the current program
=======
the lines that replace them
>>>>>>> REPLACE
</DIFF>

Rules:
- Edit only code between a `# EVOLVE-BLOCK-START <label>` line and the next `# EVOLVE-BLOCK-END` line. \
Everything outside the blocks, the marker lines included, is frozen.
- Copy every SEARCH part character for character from the program as shown, indentation and blank lines \
included. It must match exactly one place; add a neighbouring line if it could match twice.
- One <DIFF> may hold several SEARCH/REPLACE pairs; they apply in order and must not overlap.
- Keep `{entry}` and every function the frozen code calls, with the same names and signatures.
- Use only the imports the program already has.
"""

_INTROS = (
    "You are an expert algorithm engineer improving a program through small, testable patches.",
    "You improve programs by proposing precise patches; each patch is applied, run and scored.",
    "You are taking part in an evolutionary search: each patch you write becomes a child program that is scored.",
    "You are a careful performance engineer. Your patch will be applied to the program below and evaluated.",
)

_FOCUS = (
    "Make one focused change that you expect to raise the score.",
    "Try a substantially different algorithm for one of the steps; keep the rest.",
    "Study the inspirations: carry the strongest idea from one of them into the parent.",
    "Make the program faster without giving up quality: remove wasted work or loops that can be vectorised.",
    "Look at the feedback for where the parent is weakest and fix that specifically.",
    "Tune the constants, thresholds or iteration counts where the parent looks under- or over-fitted.",
    "Simplify: replace code that does not pay for itself with something shorter and at least as good.",
    "Combine two ideas: improve one step and adapt a neighbouring step to make the most of it.",
)

_CLOSERS = (
    "Reply with the patch only.",
    "Think about why the change helps, then give the patch.",
    "Keep the patch small enough to copy its SEARCH text exactly.",
)


def prompt_hash(messages: list[Message]) -> str:
    """sha256 of the messages in canonical JSON: the key a transcript stores replies under."""
    canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def total_chars(messages: list[Message]) -> int:
    return sum(len(m["content"]) for m in messages)


def format_metrics(view: ProgramView, keys: list[str] | None = None) -> str:
    """`score` first, then the metrics that matter (the task's `keys`, in its order) or all in name order."""
    if keys:
        return metrics_line(view, keys)
    parts = []
    if view.score is not None:
        parts.append(f"score {view.score:.6g}")
    for key in sorted(view.metrics)[:MAX_METRICS]:
        value = view.metrics[key]
        parts.append(f"{key} {value:.4g}" if isinstance(value, (int, float)) else f"{key} {value}")
    return ", ".join(parts) if parts else "not yet scored"


def _evolve_view(code: str) -> str:
    """Only the EVOLVE blocks of a program (with their markers): the frozen rest is the parent's anyway."""
    try:
        from evolve.patch import evolve_blocks

        blocks = evolve_blocks(code)
    except Exception:  # no markers, broken markers: show it all
        blocks = []
    if not blocks:
        return code
    return "\n".join(
        "# EVOLVE-BLOCK-START" + (f" {b.label}" if b.label else "") + f"\n{b.body}# EVOLVE-BLOCK-END\n"
        for b in blocks
    )


def _fence(code: str) -> str:
    fence = "````" if "```" in code else "```"
    return f"{fence}python\n{code.rstrip()}\n{fence}"


def _is_marker(line: str) -> bool:
    return "EVOLVE-BLOCK-" in line and line.lstrip().startswith("#")


@functools.lru_cache(maxsize=16)  # a prompt is measured several times while it is fitted to its size
def shown_code(code: str, limit: int = PARENT_MAX_CHARS) -> tuple[str, int]:
    """`code` as a prompt shows it, and how many of its lines were left out (0: shown whole).

    Within `limit` characters: the EVOLVE blocks and their markers first (markers always), then lines from
    the start and the end of the program in equal shares. Each run of left-out lines becomes one note."""
    if len(code) <= limit:
        return code, 0
    lines = code.splitlines(keepends=True)
    keep = [False] * len(lines)
    inside, block = False, []
    for i, line in enumerate(lines):
        if _is_marker(line):
            keep[i] = True
            inside = "EVOLVE-BLOCK-START" in line
        elif inside:
            block.append(i)
    used = sum(min(len(lines[i]), MARKER_MAX_CHARS) for i in range(len(lines)) if keep[i])
    if used + sum(len(lines[i]) for i in block) <= limit * 3 // 4:  # the editable code fits: show it whole
        for i in block:
            keep[i] = True
        used += sum(len(lines[i]) for i in block)
    share = max(0, limit - used) // 2
    for order in (range(len(lines)), range(len(lines) - 1, -1, -1)):
        spent = 0
        for i in order:
            if keep[i]:
                continue
            if spent + len(lines[i]) > share:
                break
            keep[i] = True
            spent += len(lines[i])
    out: list[str] = []
    cut = run = chars = 0
    for i, line in enumerate(lines + [""]):
        if i < len(lines) and not keep[i]:
            run, chars = run + 1, chars + len(line)
            continue
        if run:
            out.append(f"# [... {run} lines ({chars} characters) of the program are not shown here; they stay in "
                       "the program as they are ...]\n")
            cut += run
            run = chars = 0
        if i < len(lines):
            out.append(line if not _is_marker(line) else line[:MARKER_MAX_CHARS].rstrip("\n") + "\n")
    return "".join(out), cut


def _parent_section(view: ProgramView, feedback_lines: int | None, keys: list[str] | None = None) -> str:
    feedback = view.feedback.strip()
    if feedback and feedback_lines is not None:
        lines = feedback.splitlines()
        if len(lines) > feedback_lines:
            feedback = "\n".join(lines[:feedback_lines] + [f"... ({len(lines) - feedback_lines} more lines)"])
    if len(feedback) > FEEDBACK_MAX_CHARS:
        feedback = feedback[:FEEDBACK_MAX_CHARS] + f" ... ({len(feedback) - FEEDBACK_MAX_CHARS} more characters)"
    out = [f"# Current program (parent {view.id[:12] or 'seed'})", f"Metrics: {format_metrics(view, keys)}"]
    if feedback:
        out.append(f"Evaluator feedback:\n{feedback}")
    code, cut = shown_code(view.code)
    if cut:
        total = view.code.count("\n") + (not view.code.endswith("\n"))
        out.append(f"The program is long ({len(view.code)} characters): {total - cut} of its {total} lines are shown, "
                   "its EVOLVE blocks first, then its start and end. Copy SEARCH text only from the lines shown.")
    out.append(_fence(code))
    return "\n\n".join(out)


def _failures_section(failures: list[str]) -> str:
    if not failures:
        return ""
    lines = "\n".join(f"- {' '.join(f.split())[:400]}" for f in failures)
    return f"# Recent children of this parent that failed\nAvoid repeating these mistakes:\n{lines}"


def _inspiration_section(views: list[ProgramView], keys: list[str] | None = None) -> str:
    if not views:
        return ""
    out = ["# Other programs from the archive (their EVOLVE blocks only)"]
    for i, view in enumerate(views, 1):
        title = f"## Inspiration {i}" + (f": {view.patch_name}" if view.patch_name else "")
        out.append(f"{title}\nMetrics: {format_metrics(view, keys)}\n{_fence(_evolve_view(view.code))}")
    return "\n\n".join(out)


@functools.lru_cache(maxsize=16)
def _blocks_line(code: str) -> str:
    try:
        from evolve.patch import evolve_blocks

        labels = [b.label or "(unlabelled)" for b in evolve_blocks(code)]
    except Exception:
        labels = []
    if not labels:
        return ""
    return "Editable blocks in the current program: " + ", ".join(labels) + "."


def build_messages(request: ProposalRequest, max_chars: int = DEFAULT_MAX_CHARS, mode: str = "diff") -> list[Message]:
    """System + user messages for one proposal. Deterministic in `request` (its seed picks the phrasing).

    `mode` is the kind of answer asked for: `diff` (a patch), `rewrite` (a whole program in <CODE>) or
    `crossover` (a patch that carries the second parent's strengths into the parent; the second parent is
    the first inspiration, shown in full)."""
    rng = random.Random(f"prompt:{request.seed}")
    intro = rng.choice(_INTROS)
    focus = rng.choice(_FOCUS)
    closer = rng.choice(_CLOSERS)
    inspirations_first = rng.random() < 0.5
    rules = FORMAT_RULES.format(entry=request.entry_function)
    system_parts = [intro]
    if request.problem_statement.strip():
        system_parts.append("# The problem\n" + request.problem_statement.strip())
    system_parts.append("# How to answer\n" + rules + "\n" + WORKED_EXAMPLE)
    if mode == "rewrite":
        system_parts.append(REWRITE_RULES)
    system = "\n\n".join(system_parts)
    keys = list(request.metric_keys)

    inspirations = list(request.inspirations)
    second = inspirations.pop(0) if mode == "crossover" and inspirations else None
    failures = list(request.recent_failures)[-MAX_FAILURES:]
    feedback_lines: int | None = None

    def user_text() -> str:
        parent = _parent_section(request.parent, feedback_lines, keys)
        others = _inspiration_section(inspirations, keys)
        sections = [standing_section(request)]
        sections += [others, parent] if inspirations_first else [parent, others]
        if second is not None:
            sections.append(crossover_section(second, keys))
        sections += [history_section(request.history), notes_section(request.notes), _failures_section(failures)]
        ask = mode_instruction(mode if mode != "crossover" or second is not None else "diff") or focus
        task = "# Your task\n" + " ".join(x for x in (ask, _blocks_line(request.parent.code), closer) if x)
        sections.append(task)
        return "\n\n".join(s for s in sections if s)

    def size() -> int:
        return len(system) + len(user_text())

    while size() > max_chars and inspirations:
        inspirations.pop()
    if not inspirations and "inspiration" in focus:  # nothing left to study: ask for something else
        focus = _FOCUS[0]
    while size() > max_chars and failures:
        failures.pop(0)
    for keep in (20, 5, 0):
        if size() <= max_chars:
            break
        feedback_lines = keep
    return [{"role": "system", "content": scrub(system)}, {"role": "user", "content": scrub(user_text())}]


def patch_retry_message(feedback: str, attempts_left: int) -> str:
    """What the model is told when its patch did not apply; sent in the same conversation."""
    tries = "one more try" if attempts_left == 1 else f"{attempts_left} more tries"
    return (
        "Your patch could not be applied:\n\n"
        f"{scrub(feedback.strip())}\n\n"
        f"Send a corrected patch in the same format ({tries}). Copy every SEARCH part exactly from the "
        "current program shown earlier, not from your previous answer."
    )


def describe(messages: list[Message]) -> dict[str, Any]:
    """A short summary of a prompt for logs: hash, size, roles."""
    roles = [m["role"] for m in messages]
    return {"prompt_hash": prompt_hash(messages), "chars": total_chars(messages), "roles": roles}
