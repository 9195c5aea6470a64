"""The spending limit of the LLM proposer: dollars and tokens counted across every call of a campaign."""
from __future__ import annotations

import threading


class Budget:
    """Dollars and tokens spent across all proposals, thread-safe. A limit of 0 means none."""

    def __init__(self, max_cost: float = 0.0, max_tokens: int = 0) -> None:
        self.max_cost = max_cost
        self.max_tokens = max_tokens
        self.cost = 0.0
        self.tokens = 0
        self._lock = threading.Lock()

    def add(self, tokens: int, cost: float) -> None:
        with self._lock:
            self.tokens += tokens
            self.cost += cost

    @property
    def exhausted(self) -> bool:
        return (self.max_cost > 0 and self.cost >= self.max_cost) or (
            self.max_tokens > 0 and self.tokens >= self.max_tokens
        )

    def left(self) -> dict[str, float | None]:
        """Dollars and tokens still allowed (None: no limit)."""
        return {
            "cost": max(0.0, self.max_cost - self.cost) if self.max_cost > 0 else None,
            "tokens": max(0, self.max_tokens - self.tokens) if self.max_tokens > 0 else None,
        }

    def describe(self) -> str:
        parts = []
        if self.max_cost > 0:
            parts.append(f"${self.cost:.4f} of ${self.max_cost:.4f}")
        if self.max_tokens > 0:
            parts.append(f"{self.tokens} of {self.max_tokens} tokens")
        return "budget exhausted: spent " + " and ".join(parts)
