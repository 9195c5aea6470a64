"""The transcript of a run: JSON lines, one record per HTTP call and one per finished proposal.

The LLM proposer writes it (every record scrubbed of secrets); `evolve.proposers.replay` reads it back to
re-run a campaign with no endpoint and no cost.
"""
from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evolve.errors import UserError
from evolve.scrub import scrub_data

TRANSCRIPT_VERSION = 1


class Transcript:
    """Append-only JSON lines, one record per HTTP call plus one per finished proposal; thread-safe."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **record}
        line = json.dumps(scrub_data(record), ensure_ascii=False, sort_keys=False)
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()


def read_transcript(path: str | Path) -> list[dict[str, Any]]:
    """Records of a transcript.jsonl; a line that is not JSON is a `UserError` naming it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"transcript {path} does not exist; give the transcript.jsonl of a recorded run")
    records = []
    with open(path, encoding="utf-8") as fh:
        for no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"transcript {path} line {no} is not JSON ({exc.msg}); the file is damaged") from None
            if isinstance(record, dict):
                records.append(record)
    return records
