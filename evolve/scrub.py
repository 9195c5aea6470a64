"""Secrets of the harness's environment, scrubbed out of every text a program or a model could carry out.

The sandbox is the barrier that keeps secrets from candidate programs; still, every text that comes
back from one (an error, printed output, feedback) or from a model reply is scrubbed before it is
stored, shown or sent on: defence in depth against a sandbox that leaks. The secrets are the values (at least
`MIN_LENGTH` characters) of environment variables whose names look secret (`*KEY*`, `*TOKEN*`,
`*SECRET*`, `*PASSWORD*`, `*PASSWD*`, `*CREDENTIAL*`, `*AUTH*`, and a few well-known names), plus any
value registered with `add_secret` (the LLM proposer registers its API key variable, whatever its name).

A value is also caught in simple disguises: in any letter case, reversed, with up to four separator
characters between its characters (spaces, dashes, a Python list of its letters), URL-encoded (fully
or in part), as hexadecimal (optionally `\\x`/`0x`-prefixed or separated), and as standard or URL-safe
base64 at each of the three byte alignments it can have inside a longer encoded text; and any piece of
`FRAGMENT` (16) characters or more of a value of 20 or more, in any case (a program printing half a
key). Each occurrence becomes `[secret NAME removed]`.

The patterns are compiled once per set of secrets into one regular expression over a lowercased copy
of the text (plus substring tests for the base64 forms), so scrubbing a text costs one scan. The set is
read from `os.environ` on first use; call `refresh()` after changing the environment in-process.
"""
from __future__ import annotations

import base64
import dataclasses
import os
import re
import threading
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from evolve.task import Result

MIN_LENGTH = 8  # shorter values ("EMPTY", "none", "1") are not secrets and would mangle ordinary text
FRAGMENT = 16  # a piece of a value this long is removed too (values of 20 characters and more)
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")
WELL_KNOWN = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY",
              "AWS_SESSION_TOKEN", "GITHUB_TOKEN", "GH_TOKEN", "GOOGLE_API_KEY", "GEMINI_API_KEY",
              "AZURE_OPENAI_API_KEY", "MISTRAL_API_KEY", "DEEPSEEK_API_KEY", "WANDB_API_KEY")
# Names that contain a secret word but hold none: authors, agent sockets, keyboard settings.
_NOT_SECRET = re.compile(r"AUTHOR|_SOCK$|KEYBOARD|KEYMAP|XKB")
_SECRET_NAME = re.compile("|".join(SECRET_WORDS))
_SEPARATOR = r"[^0-9A-Za-z%]{0,4}"  # between spelled-out characters: spaces, dashes, "', '" of a list
_HEX_SEPARATOR = r"[\s:,.\-]{0,2}(?:\\x|0x)?"  # between hex bytes: "73 6b", "73:6b", "\x73\x6b", "0x73, 0x6b"


def looks_secret(name: str) -> bool:
    """True for environment variable names that conventionally hold secrets."""
    upper = name.upper()
    return upper in WELL_KNOWN or (bool(_SECRET_NAME.search(upper)) and not _NOT_SECRET.search(upper))


def environment_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """name -> value of every secret-looking variable whose value is long enough to be a secret."""
    env = os.environ if environ is None else environ
    return {name: value for name, value in sorted(env.items())
            if looks_secret(name) and len(value.strip()) >= MIN_LENGTH}


def _encoded(char: str) -> list[str]:
    """Percent-encodings of a character of a lowercased text (lowercase hex), of both its cases."""
    forms = []
    for variant in dict.fromkeys((char, char.upper())):
        if len(variant) == 1:
            forms.append("".join(f"%{byte:02x}" for byte in variant.encode("utf-8")))
    if char == " ":
        forms.append(r"\+")
    return forms


def _char(char: str) -> str:
    """One character of a lowercased text: itself, or percent-encoded, `+` for a space."""
    return "(?:" + "|".join([re.escape(char), *_encoded(char)]) + ")"


def _spelled(value: str) -> list[str]:
    """Patterns for `value` (lowercase) with its characters plain or percent-encoded and up to four
    separators between them. Two alternatives, the first character plain or encoded, so that every
    alternative starts with a literal and the regex engine can skip ahead fast."""
    rest = "".join(_SEPARATOR + _char(char) for char in value[1:])
    heads = [re.escape(value[0]), *_encoded(value[0])]
    return [head + rest for head in heads]


def _hex(value: str) -> str:
    return _HEX_SEPARATOR.join(f"{byte:02x}" for byte in value.encode("utf-8"))


def _base64_forms(value: str) -> list[str]:
    """The part of any base64 text that encodes `value`, for each of the 3 alignments it may start at.

    Base64 turns each 3 bytes into 4 characters; bytes that share a group with the text around the value
    encode differently, so only whole groups made of the value's own bytes are matched."""
    raw = value.encode("utf-8")
    forms: list[str] = []
    for skip in range(3):
        chunk = raw[skip:]
        chunk = chunk[: len(chunk) // 3 * 3]
        if len(chunk) < 6:  # fewer than 8 encoded characters: too short to be told from ordinary text
            continue
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(chunk).decode("ascii")
            if text not in forms:
                forms.append(text)
    return forms


def folded_patterns(value: str) -> list[str]:
    """Patterns for `value` in a lowercased text: spelled out (plain, spaced, percent-encoded), reversed,
    and as hexadecimal."""
    low = value.lower()
    return [*_spelled(low), *_spelled(low[::-1]), _hex(value)]


def _anchors(low: str) -> list[tuple[str, int]]:
    """(piece, offset) of the value's aligned pieces of FRAGMENT // 2 characters. Any run of FRAGMENT
    characters of the value holds one whole, so finding these (plain substring searches, fast) finds
    every long enough piece of the value."""
    if len(low) < FRAGMENT + 4:  # shorter values are caught whole or not at all
        return []
    step = FRAGMENT // 2
    return [(low[at:at + step], at) for at in range(0, len(low) - step + 1, step)]


def _fold(text: str) -> str:
    """`text` in lower case, one character for one (so positions carry over to the original)."""
    lower = text.lower()
    if len(lower) == len(text):
        return lower
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)  # e.g. "İ" lowers to two characters


class Scrubber:
    """Replaces the given secrets (name -> value), and their disguises, with `[secret NAME removed]`.

    Letter case is handled by scanning a lowercased copy of the text (same length, so positions carry
    over); base64 forms are case-sensitive literals, found with a substring test; pieces of a value are
    found through its aligned anchors (`_anchors`), also with substring tests."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        by_value: dict[str, str] = {}
        for name, value in secrets.items():
            value = value.strip()
            if len(value) >= MIN_LENGTH:
                by_value.setdefault(value, name)  # one value held by two variables: name the first
        # longest first, so a secret that contains another is removed whole
        ordered = sorted(by_value.items(), key=lambda item: -len(item[0]))
        self.names = [name for _, name in ordered]
        self._values = [value for value, _ in ordered]
        self._each: dict[int, re.Pattern[str]] = {}  # compiled when a match must be named (rare)
        folded = "|".join(p for value, _ in ordered for p in folded_patterns(value))
        self._folded = re.compile(folded) if ordered else None
        self._literals = [(form, i) for i, (value, _) in enumerate(ordered) for form in _base64_forms(value)]
        self._anchors = [(piece, at, i) for i, (value, _) in enumerate(ordered)
                         for piece, at in _anchors(value.lower())]
        self._folded_values = [value.lower() for value in self._values]

    def __bool__(self) -> bool:
        return self._folded is not None

    def _marker(self, index: int) -> str:
        return f"[secret {self.names[index]} removed]"

    def _which(self, folded: str) -> int:
        """Which secret a match of the combined pattern is."""
        if len(self._values) == 1:
            return 0
        for i, value in enumerate(self._values):
            if i not in self._each:
                self._each[i] = re.compile("|".join(folded_patterns(value)))
            if self._each[i].fullmatch(folded):
                return i
        return 0

    def scrub(self, text: str) -> str:
        """`text` without any secret; unchanged (the same object) when it holds none."""
        if self._folded is None or not text:
            return text
        for form, index in self._literals:
            if form in text:
                text = text.replace(form, self._marker(index))
        lower = _fold(text)
        pieces, last = [], 0
        for match in self._folded.finditer(lower):
            pieces += [text[last:match.start()], self._marker(self._which(match.group()))]
            last = match.end()
        if pieces:
            pieces.append(text[last:])
            text = "".join(pieces)
            lower = _fold(text)
        return self._scrub_pieces(text, lower) if len(text) >= FRAGMENT else text

    def _scrub_pieces(self, text: str, lower: str) -> str:
        """Remove runs of at least FRAGMENT characters of a value (a program that prints half a key)."""
        spans: list[tuple[int, int, int]] = []
        for piece, at, index in self._anchors:
            start = lower.find(piece)
            while start >= 0:
                value = self._folded_values[index]
                left = 0  # grow the match to the left and right as far as the text follows the value
                while left < at and start - left > 0 and lower[start - left - 1] == value[at - left - 1]:
                    left += 1
                right, end = at + len(piece), start + len(piece)
                while right < len(value) and end < len(lower) and lower[end] == value[right]:
                    right, end = right + 1, end + 1
                if end - (start - left) >= FRAGMENT:
                    spans.append((start - left, end, index))
                start = lower.find(piece, start + 1)
        if not spans:
            return text
        out, last = [], 0
        for begin, end, index in sorted(spans):
            if begin < last:  # overlaps the span removed before: remove up to its end too
                last = max(last, end)
                continue
            out += [text[last:begin], self._marker(index)]
            last = end
        out.append(text[last:])
        return "".join(out)

    def scrub_data(self, data: Any) -> Any:
        """A copy of JSON-like data (dicts, lists, tuples, strings) with every string scrubbed."""
        if self._folded is None:
            return data
        if isinstance(data, str):
            return self.scrub(data)
        if isinstance(data, dict):
            return {self.scrub_data(k) if isinstance(k, str) else k: self.scrub_data(v) for k, v in data.items()}
        if type(data) in (list, tuple):
            return type(data)(self.scrub_data(v) for v in data)
        return data


_lock = threading.Lock()
_extra: dict[str, str] = {}
_current: Scrubber | None = None


def scrubber() -> Scrubber:
    """The scrubber for this process's environment (built on first use; see `refresh`)."""
    global _current
    current = _current
    if current is None:
        with _lock:
            if _current is None:
                _current = Scrubber({**environment_secrets(), **_extra})
            current = _current
    return current


def refresh() -> None:
    """Read the environment again on next use (after a variable was set or removed in-process)."""
    global _current
    with _lock:
        _current = None


def add_secret(name: str, value: str | None) -> None:
    """Treat `value` as a secret named `name` whatever the variable is called (e.g. a configured API key)."""
    if value and len(value.strip()) >= MIN_LENGTH and _extra.get(name) != value:
        with _lock:
            _extra[name] = value
        refresh()


def scrub(text: str) -> str:
    """`text` with every secret of the environment (and its disguises) replaced by a marker."""
    return scrubber().scrub(text)


def scrub_data(data: Any) -> Any:
    """JSON-like data with every string scrubbed."""
    return scrubber().scrub_data(data)


def scrub_result(result: "Result") -> "Result":
    """A copy of a task's `Result` with every text (error, feedback, output, metric names) scrubbed."""
    s = scrubber()
    if not s:
        return result
    return dataclasses.replace(
        result, error=s.scrub(result.error), feedback=s.scrub(result.feedback), stdout=s.scrub(result.stdout),
        stderr=s.scrub(result.stderr), metrics=s.scrub_data(result.metrics), scores=s.scrub_data(result.scores),
        per_window=s.scrub_data(result.per_window), dataset=s.scrub_data(result.dataset),
    )
