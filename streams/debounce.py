"""Per-key debouncing with a leading and a trailing edge."""

from __future__ import annotations


class Debouncer:
    """Lets a key fire at most once per ``quiet_s``; a key offered during the quiet time fires once after it."""

    def __init__(self, quiet_s: float) -> None:
        self.quiet_s = quiet_s
        self._last_fired: dict[str, float] = {}
        self._due: dict[str, float] = {}

    @property
    def waiting(self) -> int:
        """Keys whose trailing edge is still to come."""
        return len(self._due)

    def is_waiting(self, key: str) -> bool:
        """Whether ``key``'s trailing edge is still to come."""
        return key in self._due

    def offer(self, key: str, now: float) -> bool:
        """True if ``key`` fires now; otherwise it is scheduled for the end of its quiet time."""
        last = self._last_fired.get(key)
        if last is None or now - last >= self.quiet_s:
            self._last_fired[key] = now
            self._due.pop(key, None)
            return True
        self._due[key] = last + self.quiet_s
        return False

    def pop_due(self, now: float) -> list[str]:
        """Keys whose trailing edge has come; they count as fired now."""
        ready = [key for key, at in self._due.items() if at <= now]
        for key in ready:
            del self._due[key]
            self._last_fired[key] = now
        return ready

    def clear(self) -> None:
        """Forget every key: none is waiting, and each fires at once when next offered."""
        self._last_fired.clear()
        self._due.clear()

    def forget_older_than(self, now: float) -> None:
        """Drop bookkeeping of keys quiet for longer than the quiet time (bounded memory)."""
        cutoff = now - self.quiet_s
        self._last_fired = {k: t for k, t in self._last_fired.items() if t >= cutoff or k in self._due}
