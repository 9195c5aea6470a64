"""Prompt sections beyond the parent and its inspirations: a worked patch example, the objective in
numbers, the island's recent attempts, model-written notes, and the three kinds of request (a diff, a
full rewrite, a crossover of two parents).

Each function returns plain text ('' when it has nothing to say), so `evolve.prompts` only arranges them.
"""
from __future__ import annotations

from evolve.proposers.base import ProgramView, ProposalRequest

MODES = ("diff", "rewrite", "crossover")
MAX_HISTORY = 8

WORKED_EXAMPLE = """\
A worked example. If the program holds

    # EVOLVE-BLOCK-START scale
    def scale(x):
        return x * 2
    # EVOLVE-BLOCK-END

then this reply makes `scale` triple its input:

<NAME>
triple_scale
</NAME>

<DESCRIPTION>
Scale by three instead of two.
</DESCRIPTION>

<DIFF>
<<<<<<< SEARCH
    return x * 2
=======
    return x * 3
>>>>>>> REPLACE
</DIFF>
"""

REWRITE_RULES = """\
This time, rewrite the program as a whole. Answer in exactly this format:

<NAME>
short_snake_case_name
</NAME>

<DESCRIPTION>
The new approach and why you expect it to score better, in a few sentences.
</DESCRIPTION>

<CODE>
the complete program, every line of it, the frozen parts outside the EVOLVE blocks unchanged
</CODE>
"""


def metrics_line(view: ProgramView, keys: list[str]) -> str:
    """The score and the metrics that matter, in the task's order (all metrics when it names none)."""
    parts = [f"score {view.score:.6g}"] if view.score is not None else []
    chosen = [k for k in keys if k in view.metrics] if keys else sorted(view.metrics)
    for key in chosen[:16]:
        value = view.metrics[key]
        parts.append(f"{key} {value:.4g}" if isinstance(value, (int, float)) else f"{key} {value}")
    return ", ".join(parts) if parts else "not yet scored"


def standing_section(request: ProposalRequest) -> str:
    return f"# Where the search stands\n{request.standing.strip()}" if request.standing.strip() else ""


def history_section(history: list[str]) -> str:
    """The island's recent attempts, newest last: what was tried, its score change or its error."""
    if not history:
        return ""
    lines = "\n".join(f"- {' '.join(h.split())[:300]}" for h in history[-MAX_HISTORY:])
    return ("# Recent attempts on this island (oldest first)\nLearn from them: repeat what raised the score, "
            f"avoid what failed.\n{lines}")


def notes_section(notes: str) -> str:
    return f"# Notes on what has and has not worked so far\n{notes.strip()}" if notes.strip() else ""


def crossover_section(other: ProgramView, keys: list[str]) -> str:
    """The second parent of a crossover, in full."""
    fence = "````" if "```" in other.code else "```"
    return (f"# Second parent ({other.id[:12]})\nMetrics: {metrics_line(other, keys)}\n\n"
            f"{fence}python\n{other.code.rstrip()}\n{fence}")


def mode_instruction(mode: str) -> str:
    if mode == "rewrite":
        return "Rewrite the program with a substantially better approach, keeping the frozen code and the contract."
    if mode == "crossover":
        return ("Combine the two parents: keep the current program and carry over the blocks or ideas in which "
                "the second parent is stronger, as a patch against the current program.")
    return ""


NOTES_SYSTEM = (
    "You advise an evolutionary program search. From the recent attempts below (patch name, then the score "
    "change or the error) and the previous notes, write at most 8 short bullet points: which kinds of change "
    "raised the score, which did not or broke the program, and what to try next. Plain text, no code."
)


def notes_messages(history: list[str], previous: str) -> list[dict[str, str]]:
    """The request for model-written notes (meta-recommendations); deterministic in its inputs."""
    lines = "\n".join(f"- {' '.join(h.split())[:300]}" for h in history[-40:]) or "- (no attempts yet)"
    user = f"# Previous notes\n{previous.strip() or '(none)'}\n\n# Recent attempts\n{lines}"
    return [{"role": "system", "content": NOTES_SYSTEM}, {"role": "user", "content": user}]

