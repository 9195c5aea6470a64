"""The prompt and reply behind a program, read from the run's `transcript.jsonl`.

A proposal record names its child by `child_sha256` (the program id) and its request by `request_key`;
the call records with that key hold the messages sent and the reply. The file only grows, so the index
reads each new complete line once and keeps byte offsets, not records. Only the conversation's own
fields are returned (roles, message text, reply, model, usage, errors), never request parameters, and
anything shaped like a credential is masked again here: a reply is untrusted text and a transcript
written by an older version may hold what it should not.
"""
from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

TRANSCRIPT_NAME = "transcript.jsonl"
MAX_TEXT = 60_000  # per message or reply shown
MASK = "***"

# Bearer tokens, "sk-"-style keys, and key=value / "key": "value" pairs whose name says secret.
_SECRET_PATTERNS = [
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\b(?:sk|pk|rk|ak)-[A-Za-z0-9_-]{12,}"),
    re.compile(r"\b(?:ghp|gho|github_pat|hf|xox[abp])_[A-Za-z0-9_]{12,}"),
    re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"),
    re.compile(r"(?i)((?:api[_-]?key|secret|token|password|authorization)[\"']?\s*[:=]\s*[\"']?)([^\s\"',;]{6,})"),
]


def scrub(text: str) -> str:
    """`text` with credential-shaped substrings replaced by ***."""
    for pattern in _SECRET_PATTERNS[:-1]:
        text = pattern.sub(MASK, text)
    return _SECRET_PATTERNS[-1].sub(lambda m: m.group(1) + MASK, text)


def _clip(text: Any) -> str | None:
    if text is None:
        return None
    text = str(text)
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + f"\n... ({len(text) - MAX_TEXT} more characters)"
    return scrub(text)


class TranscriptIndex:
    """Offsets of proposal and call records in one transcript, brought up to date on each lookup."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._read_to = 0
        self._proposals: dict[str, int] = {}  # child program id -> offset of its proposal record
        self._calls: dict[str, list[int]] = {}  # request_key -> offsets of its call records
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        try:
            size = self.path.stat().st_size
        except OSError:
            return
        if size < self._read_to:  # replaced by a shorter file: start over
            self._read_to, self._proposals, self._calls = 0, {}, {}
        if size == self._read_to:
            return
        with open(self.path, "rb") as fh:
            fh.seek(self._read_to)
            offset = self._read_to
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # a record still being written: read it next time
                self._note(line, offset)
                offset += len(line)
            self._read_to = offset

    def _note(self, line: bytes, offset: int) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            return
        if not isinstance(record, dict):
            return
        if record.get("kind") == "proposal" and record.get("child_sha256"):
            self._proposals[str(record["child_sha256"])] = offset
        elif record.get("kind") == "call" and record.get("request_key"):
            self._calls.setdefault(str(record["request_key"]), []).append(offset)

    def _read(self, fh: Any, offset: int) -> dict[str, Any]:
        fh.seek(offset)
        return json.loads(fh.readline())

    def conversation(self, pid: str) -> dict[str, Any] | None:
        """The proposal that made `pid` and its calls, or None when the transcript has none."""
        with self._lock:
            self._refresh()
            offset = self._proposals.get(pid)
            calls = list(self._calls.get(self._key_at(offset), [])) if offset is not None else []
        if offset is None:
            return None
        with open(self.path, "rb") as fh:
            proposal = self._read(fh, offset)
            records = [self._read(fh, o) for o in calls]
        return {
            "model": _clip(proposal.get("model")),
            "generation": proposal.get("generation"),
            "attempts": proposal.get("attempts"),
            "tokens_in": proposal.get("tokens_in"),
            "tokens_out": proposal.get("tokens_out"),
            "cost": proposal.get("cost"),
            "error": _clip(proposal.get("error")),
            "calls": [_call_view(r) for r in records],
        }

    def _key_at(self, offset: int) -> str:
        with open(self.path, "rb") as fh:
            return str(self._read(fh, offset).get("request_key", ""))


def _call_view(record: dict[str, Any]) -> dict[str, Any]:
    messages = record.get("messages") if isinstance(record.get("messages"), list) else []
    usage = record.get("usage") if isinstance(record.get("usage"), dict) else {}
    return {
        "time": _clip(record.get("time")),
        "attempt": record.get("attempt"),
        "try": record.get("try"),
        "model": _clip(record.get("model")),
        "messages": [{"role": _clip(m.get("role")), "content": _clip(m.get("content"))}
                     for m in messages if isinstance(m, dict)],
        "reply": _clip(record.get("reply")),
        "finish_reason": _clip(record.get("finish_reason")),
        "error": _clip(record.get("error")),
        "tokens_in": usage.get("prompt_tokens"),
        "tokens_out": usage.get("completion_tokens"),
        "latency_s": record.get("latency_s"),
    }


class Transcripts:
    """One index per run directory, made on first use."""

    def __init__(self) -> None:
        self._indexes: dict[Path, TranscriptIndex] = {}
        self._lock = threading.Lock()

    def conversation(self, run_dir: Path, pid: str) -> dict[str, Any] | None:
        path = run_dir / TRANSCRIPT_NAME
        if not path.is_file():
            return None
        with self._lock:
            index = self._indexes.setdefault(path, TranscriptIndex(path))
        return index.conversation(pid)
