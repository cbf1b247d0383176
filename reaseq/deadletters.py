"""The dead-letter record format: the original bytes as the value, the why and where in headers.

Keeping the value byte-for-byte lets an operator fix and re-publish a record; headers follow the
Kafka Connect convention of describing the failure beside the record rather than wrapping it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reaseq.contracts import DeadLetterReason

PREFIX = "dlq."
MAX_DETAIL = 2000

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class DeadLetter:
    reason: DeadLetterReason
    detail: str
    source_topic: str  # a topic, or the file a publisher read
    source_partition: int  # -1 for a file
    source_offset: int  # the line number for a file
    agent: str
    key: bytes | None
    value: bytes | None

    def headers(self) -> Headers:
        fields = {
            "reason": self.reason.value,
            "detail": self.detail[:MAX_DETAIL],
            "source.topic": self.source_topic,
            "source.partition": str(self.source_partition),
            "source.offset": str(self.source_offset),
            "agent": self.agent,
        }
        return [(PREFIX + name, value.encode("utf-8", "replace")) for name, value in fields.items()]

    @classmethod
    def from_record(
        cls, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None
    ) -> DeadLetter:
        """Read a dead-letter record back (for status, replays and tests)."""
        found = {
            name[len(PREFIX) :]: raw.decode("utf-8", "replace")
            for name, raw in headers or []
            if name.startswith(PREFIX)
        }
        return cls(
            reason=DeadLetterReason(found["reason"]),
            detail=found.get("detail", ""),
            source_topic=found.get("source.topic", ""),
            source_partition=int(found.get("source.partition", "-1")),
            source_offset=int(found.get("source.offset", "-1")),
            agent=found.get("agent", ""),
            key=key,
            value=value,
        )
