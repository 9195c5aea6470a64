"""A run's own log: `run.log` in the run directory, plus progress lines on stdout when it is no terminal.

Without a terminal (CI, nohup, `| tee`) the progress bar is hidden, so a campaign would say nothing
until its end. `RunLog` writes every line it gets (start, progress, warnings of the proposer, summary)
to `run.log` with a UTC time stamp, and echoes it to stdout when stdout is not a terminal; on a terminal
the bar shows the same numbers and the log is written quietly.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

LOG_NAME = "run.log"


class RunLog:
    """Append-only lines with a time stamp; thread-safe. Also receives warnings of `evolve.*` loggers."""

    def __init__(self, run_dir: Path, echo: bool | None = None, stream: TextIO | None = None) -> None:
        self.path = Path(run_dir) / LOG_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = stream or sys.stdout
        self.echo = (not _is_tty(self.stream)) if echo is None else echo
        self._lock = threading.Lock()
        self._handle = open(self.path, "a", encoding="utf-8")
        self._handler = _Forward(self)
        self._handler.setLevel(logging.WARNING)
        logging.getLogger("evolve").addHandler(self._handler)

    def line(self, text: str, show: bool | None = None) -> None:
        """Log `text`; print it too when `show` is True, or when it is None and stdout is no terminal."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        with self._lock:
            if not self._handle.closed:
                self._handle.write(f"{stamp}Z {text}\n")
                self._handle.flush()
            if show or (show is None and self.echo):
                print(text, file=self.stream, flush=True)

    def close(self) -> None:
        logging.getLogger("evolve").removeHandler(self._handler)
        with self._lock:
            self._handle.close()


class _Forward(logging.Handler):
    def __init__(self, log: RunLog) -> None:
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.levelname.lower()}: {record.getMessage()}"
            self.log.line(text, show=False)
            print(text, file=sys.stderr, flush=True)  # where they went before the log took them over
        except Exception:  # a log line must never end a campaign
            pass


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
