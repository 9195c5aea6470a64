"""Line and wording helpers shared by the patch modules.

Lines are split on "\\n" only: str.splitlines also splits on \\x0c, \\u2028 and friends, which can sit
inside string literals and must survive a patch untouched.
"""
from __future__ import annotations


def normalize(text: str) -> tuple[str, bool]:
    """LF text, and whether every newline was CRLF (so the child can be written back the same way)."""
    crlf = "\r\n" in text and text.count("\r\n") == text.count("\n")
    return text.replace("\r\n", "\n"), crlf


def split_lines(text: str) -> tuple[list[str], bool]:
    """Lines without their newline, and whether the text ended with one."""
    if not text:
        return [], False
    final = text.endswith("\n")
    return (text[:-1] if final else text).split("\n"), final


def join_lines(lines: list[str], final: bool) -> str:
    """The inverse of `split_lines`."""
    return "\n".join(lines) + ("\n" if final and lines else "")


def block_text(lines: list[str]) -> str:
    """Lines as a block's text: every line ends in a newline, no lines is ""."""
    return "".join(line + "\n" for line in lines)


def quote(line: str, width: int = 72) -> str:
    """A line as a one-line message shows it: stripped, shortened, quoted."""
    text = line.strip()
    if len(text) > width:
        text = text[: width - 3] + "..."
    return repr(text)


def first_code_line(lines: list[str]) -> str:
    """The line a message names a SEARCH by: its first non-blank one."""
    return next((line for line in lines if line.strip()), lines[0] if lines else "")


def ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def and_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe_ws(ws: str) -> str:
    """Indentation in words ("1 tab and 4 spaces"): tabs and spaces look alike in a message."""
    tabs, spaces = ws.count("\t"), ws.count(" ")
    parts = [f"{tabs} tab{'s' * (tabs != 1)}"] if tabs else []
    if spaces or not parts:
        parts.append(f"{spaces} space{'s' * (spaces != 1)}")
    return " and ".join(parts)


def clip(lines: list[str], limit: int = 40) -> str:
    """The first `limit` lines of a detail, and how many were left out: feedback stays readable."""
    return "\n".join(lines[:limit] + ([f"... ({len(lines) - limit} more lines)"] if len(lines) > limit else []))
