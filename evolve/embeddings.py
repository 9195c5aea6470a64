"""Novelty by meaning: embeddings of program text from the campaign's OpenAI-compatible endpoint
(`/v1/embeddings`, whatever provider `proposer.llm.base_url` points at), with a cache.

Each distinct text is embedded once: vectors are kept in `embeddings.sqlite` in the run directory, keyed
by sha256 of (model, text), so a resumed or repeated campaign asks the endpoint only for new programs and
sees the same vectors as before. Optional (`campaign.novelty_embeddings` names the model); a failed call
never rejects a child, it only skips this check.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm > 0 else 0.0


class Embedder:
    """`embed(text)` from the endpoint or the cache. `client` replaces the openai client (tests)."""

    def __init__(self, model: str, base_url: str, api_key_env: str, cache_path: Path, client: Any = None,
                 timeout_s: float = 60.0) -> None:
        self.model, self.base_url, self.timeout_s = model, base_url, timeout_s
        self.api_key = os.environ.get(api_key_env) or ""
        self.cache_path = cache_path
        self._client = client
        self._lock = threading.Lock()
        self.calls = 0
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(cache_path) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector TEXT NOT NULL)")

    def _key(self, text: str) -> str:
        return hashlib.sha256(json.dumps([self.model, text]).encode()).hexdigest()

    def embed(self, text: str) -> list[float]:
        key = self._key(text)
        with self._lock, sqlite3.connect(self.cache_path) as conn:
            row = conn.execute("SELECT vector FROM vectors WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return json.loads(row[0])
            if self._client is None:
                import openai

                self._client = openai.OpenAI(api_key=self.api_key or "no-key-set", base_url=self.base_url or None,
                                             timeout=self.timeout_s, max_retries=2)
            self.calls += 1
            response = self._client.embeddings.create(model=self.model, input=text)
            vector = [float(x) for x in response.data[0].embedding]
            conn.execute("INSERT OR IGNORE INTO vectors (key, vector) VALUES (?, ?)", (key, json.dumps(vector)))
            return vector

    def closest(self, text: str, others: dict[str, str]) -> tuple[str, float] | None:
        """(id, cosine) of the most similar of `others` (id -> text); None when there are none."""
        mine = self.embed(text)
        best = None
        for pid, other in others.items():
            score = cosine(mine, self.embed(other))
            if best is None or score > best[1]:
                best = (pid, score)
        return best
