"""A circuit breaker for the LLM server: after repeated failures, stop calling it for a cool-down that doubles on
each failed probe; nothing is dropped, callers wait until the breaker lets them try again."""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger(__name__)


class CircuitBreaker:
    def __init__(self, failures: int = 3, cooldown_s: float = 2.0, max_cooldown_s: float = 60.0) -> None:
        self.threshold = failures
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.failures = 0
        self.cooldown_s = cooldown_s
        self.open_until = 0.0
        self.opened = 0  # times the breaker opened, for metrics and tests

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    async def wait(self) -> None:
        """Return once a call may be tried (at once while closed; after the cool-down while open)."""
        delay = self.open_until - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def success(self) -> None:
        if self.failures >= self.threshold:
            log.warning("LLM server answering again: circuit closed")
        self.failures = 0
        self.cooldown_s = self.base_cooldown_s

    def failure(self, error: BaseException) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.open_until = time.monotonic() + self.cooldown_s
            self.opened += 1
            log.warning(
                "LLM server unavailable: circuit open", extra={"cooldown_s": self.cooldown_s, "error": str(error)}
            )
            self.cooldown_s = min(self.max_cooldown_s, self.cooldown_s * 2)
