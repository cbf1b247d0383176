"""Following what the pipeline writes, from outside it: user state, item knowledge, interests, users' reasoning
steps and dead letters; with the freshness of each published interaction (publish -> visible in state)."""

from __future__ import annotations

import statistics
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from kafka_adapter.clients import from_beginning, record_of
from kafka_adapter.offsets import list_partitions
from reaseq.contracts import InterestResult, KnowledgeResult, UserFeatureUpdate, UserReasoning
from reaseq.deadletters import DeadLetter
from reaseq.settings import Settings
from reaseq.topics import DEAD_LETTERS, INTERESTS, KNOWLEDGE, USER_FEATURES, USER_REASONING, topic_name


@dataclass
class Latencies:
    """Seconds from publishing an interaction to seeing its effect, per interaction."""

    waiting: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # user -> (version, published at)
    seconds: list[float] = field(default_factory=list)

    def expect(self, user: str, version: int, published_at: float) -> None:
        self.waiting.setdefault(user, []).append((version, published_at))

    def seen(self, user: str, version: int, now: float) -> None:
        pending = self.waiting.get(user, [])
        self.seconds.extend(now - at for wanted, at in pending if wanted <= version)
        self.waiting[user] = [(wanted, at) for wanted, at in pending if wanted > version]

    def summary(self) -> str:
        if not self.seconds:
            return "-"
        ordered = sorted(self.seconds)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        return f"p50 {statistics.median(ordered):.2f} s, p95 {p95:.2f} s, max {ordered[-1]:.2f} s ({len(ordered):,} interactions)"


class PipelineWatch:
    """One consumer over the state topics, from their beginning; ``poll`` folds new records into the latest
    value per key."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.topics = {
            spec.name: topic_name(settings, spec)
            for spec in (USER_FEATURES, KNOWLEDGE, INTERESTS, USER_REASONING, DEAD_LETTERS)
        }
        self._kinds = {name: kind for kind, name in self.topics.items()}
        self._consumer = from_beginning(
            bootstrap, "reaseq-watch", list_partitions(bootstrap, self.topics.values()), {"log_level": 0}
        )
        self.users: dict[str, UserFeatureUpdate] = {}
        self.knowledge: dict[str, KnowledgeResult] = {}
        self.interests: dict[str, InterestResult] = {}
        self.reasoning: dict[str, UserReasoning] = {}
        self.dead_letters: Counter[str] = Counter()
        self.state_freshness = Latencies()
        self.interest_freshness = Latencies()
        self._applied: deque[tuple[float, int]] = deque(maxlen=64)

    @property
    def applied(self) -> int:
        """Interactions reflected in user state (each user's version counts those applied to it)."""
        return sum(user.version for user in self.users.values())

    def rate(self, window_s: float = 5.0) -> float:
        """Interactions applied per second over the last ``window_s``."""
        now = time.monotonic()
        recent = [(at, count) for at, count in self._applied if now - at <= window_s]
        if len(recent) < 2 or recent[-1][0] == recent[0][0]:
            return 0.0
        return (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            for message in self._consumer.consume(500, timeout=min(remaining, 0.1)):
                if message.error() is None and message.value() is not None:
                    record = record_of(message)
                    self._fold(self._kinds[record.topic], record.key, record.value, message.headers())  # type: ignore[arg-type]  # consumed header values are bytes
        self._applied.append((time.monotonic(), self.applied))

    def _fold(self, kind: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None) -> None:
        now = time.monotonic()
        if kind == USER_FEATURES.name:
            update = UserFeatureUpdate.model_validate_json(value)
            if update.version >= getattr(self.users.get(update.user_id), "version", -1):
                self.users[update.user_id] = update
                self.state_freshness.seen(update.user_id, update.version, now)
        elif kind == KNOWLEDGE.name:
            knowledge = KnowledgeResult.model_validate_json(value)
            self.knowledge[knowledge.item_id] = knowledge
        elif kind == INTERESTS.name:
            interests = InterestResult.model_validate_json(value)
            self.interests[interests.user_id] = interests
            self.interest_freshness.seen(interests.user_id, interests.history_version, now)
        elif kind == USER_REASONING.name:
            reasoning = UserReasoning.model_validate_json(value)
            self.reasoning[reasoning.user_id] = reasoning
        else:
            self.dead_letters[DeadLetter.from_record(key, value, headers).reason.value] += 1

    def close(self) -> None:
        self._consumer.close()
