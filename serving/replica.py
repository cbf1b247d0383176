"""A local RocksDB replica of the compacted feature topics (item features, semantic IDs of items published after
training, user histories, item knowledge, inferred interests, user reasoning steps), inside the serving process.

The topics are followed by ``kafka_adapter.follower``: each fetched batch is written with the offsets it reaches in
one RocksDB write batch, so a restarted server resumes where it stopped and a new replica (empty folder)
bootstraps from the beginning of the compacted topics; every replica reads every partition. A record that does
not decode is dead-lettered and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from kafka_adapter.clients import Producer, Record, producer
from kafka_adapter.deadletters import producer_send, send_dead_letter
from kafka_adapter.follower import Follower, reached
from kafka_adapter.offsets import Partition
from reaseq.contracts import (
    Contract,
    InterestResult,
    ItemFeatureUpdate,
    ItemSemanticId,
    KnowledgeResult,
    UserFeatureUpdate,
    UserReasoning,
)
from reaseq.deadletters import DeadLetter
from reaseq.settings import Settings
from reaseq.topics import (
    INTERESTS,
    ITEM_FEATURES,
    ITEM_IDS,
    KNOWLEDGE,
    USER_FEATURES,
    USER_REASONING,
    topic_name,
)
from reaseq.wire import ContractError, decode

log = logging.getLogger(__name__)
R = TypeVar("R", bound=BaseModel)

ITEM = b"i/"
USER = b"u/"
KNOWLEDGE_KEY = b"k/"
INTEREST_KEY = b"n/"
REASONING_KEY = b"r/"
POPULARITY = b"p/"
AGENT = "serving-replica"


@dataclass
class FetchedBatch:
    """Decoded records of one fetch, not yet written; ``None`` values are deletions (tombstones)."""

    items: dict[str, ItemFeatureUpdate | None] = field(default_factory=dict)
    users: dict[str, UserFeatureUpdate | None] = field(default_factory=dict)
    knowledge: dict[str, KnowledgeResult | None] = field(default_factory=dict)
    interests: dict[str, InterestResult | None] = field(default_factory=dict)
    reasoning: dict[str, UserReasoning | None] = field(default_factory=dict)
    ids: list[ItemSemanticId] = field(default_factory=list)  # in the order published (kept in the service)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset per partition
    rejected: int = 0

    def __bool__(self) -> bool:
        return bool(self.positions)


class FeatureReplica:
    """Item and user features as of the offsets stored beside them; one writer process per folder."""

    def __init__(self, path: Path, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.item_topic = topic_name(settings, ITEM_FEATURES)
        self.ids_topic = topic_name(settings, ITEM_IDS)
        self.user_topic = topic_name(settings, USER_FEATURES)
        self.knowledge_topic = topic_name(settings, KNOWLEDGE)
        self.interest_topic = topic_name(settings, INTERESTS)
        self.reasoning_topic = topic_name(settings, USER_REASONING)
        # a short fetch wait: the serving process polls between requests
        self.follower = Follower(path, bootstrap, self.topics, config={"fetch.wait.max.ms": 50, "log_level": 3})
        self._started = False
        self._dead_letters: Producer | None = None  # made at the first bad record

    # -- reads ----------------------------------------------------------------------------------

    def user(self, user_id: str) -> UserFeatureUpdate | None:
        return self._read(USER, user_id, UserFeatureUpdate)

    def knowledge(self, item_id: str) -> KnowledgeResult | None:
        return self._read(KNOWLEDGE_KEY, item_id, KnowledgeResult)

    def interests(self, user_id: str) -> InterestResult | None:
        return self._read(INTEREST_KEY, user_id, InterestResult)

    def reasoning(self, user_id: str) -> UserReasoning | None:
        return self._read(REASONING_KEY, user_id, UserReasoning)

    def _read(self, prefix: bytes, key: str, model: type[R]) -> R | None:
        raw = self.follower.get(prefix + key.encode())
        return None if raw is None else model.model_validate_json(raw)

    def items(self) -> Iterator[ItemFeatureUpdate]:
        for _, raw in self.scan(ITEM):
            yield ItemFeatureUpdate.model_validate_json(raw)

    def all_knowledge(self) -> Iterator[tuple[str, KnowledgeResult]]:
        """Every item's latest knowledge the replica holds."""
        for key, raw in self.scan(KNOWLEDGE_KEY):
            yield key[len(KNOWLEDGE_KEY) :].decode(), KnowledgeResult.model_validate_json(raw)

    def popularity(self) -> dict[str, int]:
        """Interactions seen per item since the replica started following the user histories."""
        return {key[len(POPULARITY) :].decode(): int(raw) for key, raw in self.scan(POPULARITY)}

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Raw entries under ``prefix`` (also for state that an owner stores beside the features)."""
        return self.follower.scan(prefix)

    def positions(self) -> dict[Partition, int]:
        return self.follower.positions()

    # -- following the topics -------------------------------------------------------------------

    def fetch(self, timeout_s: float = 0.1, max_records: int = 1000) -> FetchedBatch:
        """Read the next records (decoded, not yet written): pass the batch to :meth:`write`."""
        if not self._started:
            missing = self.follower.missing_topics()
            if missing:
                raise RuntimeError(f"feature topics {', '.join(missing)} do not exist: provision first")
            self._started = True
        batch = FetchedBatch()
        messages = self.follower.fetch(timeout_s, max_records)
        for message in messages:
            self._add(batch, message)
        batch.positions = reached(messages)
        return batch

    def write(self, batch: FetchedBatch, extra: Mapping[bytes, bytes] | None = None) -> dict[str, int]:
        """Apply ``batch`` and its offsets, plus the owner's ``extra`` entries, in one atomic write.

        Returns the new popularity counts of the items that the batch's interactions touched.
        """
        writes: dict[bytes, bytes | None] = {}
        keyed = (
            (ITEM, batch.items),
            (KNOWLEDGE_KEY, batch.knowledge),
            (INTEREST_KEY, batch.interests),
            (REASONING_KEY, batch.reasoning),
        )
        for prefix, records in keyed:
            for key, record in records.items():
                writes[prefix + key.encode()] = None if record is None else record.model_dump_json().encode()
        counts: dict[str, int] = {}
        for user_id, update in batch.users.items():
            user_key = USER + user_id.encode()
            if update is None:
                writes[user_key] = None
                continue
            for entry in _new_entries(self.user(user_id), update):
                counts[entry] = counts.get(entry, self._count(entry)) + 1
            writes[user_key] = update.model_dump_json().encode()
        for item_id, count in counts.items():
            writes[POPULARITY + item_id.encode()] = str(count).encode()
        self.follower.apply({**writes, **(extra or {})}, batch.positions)
        return counts

    @property
    def topics(self) -> tuple[str, ...]:
        return (
            self.item_topic,
            self.ids_topic,
            self.user_topic,
            self.knowledge_topic,
            self.interest_topic,
            self.reasoning_topic,
        )

    def end_offsets(self) -> dict[Partition, tuple[int, int]]:
        """(low, end) of every partition of the followed topics, now."""
        return self.follower.end_offsets()

    def behind(self, ends: Mapping[Partition, tuple[int, int]]) -> int:
        """Records up to ``ends`` that this replica has not applied yet."""
        return self.follower.behind(ends)

    def close(self) -> None:
        if self._dead_letters is not None:
            self._dead_letters.flush(10)
        self.follower.close()

    # -- internals ------------------------------------------------------------------------------

    def _add(self, batch: FetchedBatch, message: Record) -> None:
        key = (message.key or b"").decode("utf-8", "replace")
        value = message.value
        if message.topic == self.ids_topic:
            self._add_id(batch, message)
            return
        routes: dict[str, tuple[dict[str, Any], type[Contract]]] = {
            self.item_topic: (batch.items, ItemFeatureUpdate),
            self.user_topic: (batch.users, UserFeatureUpdate),
            self.knowledge_topic: (batch.knowledge, KnowledgeResult),
            self.interest_topic: (batch.interests, InterestResult),
            self.reasoning_topic: (batch.reasoning, UserReasoning),
        }
        target, model = routes[message.topic]
        if value is None:
            target[key] = None
            return
        try:
            target[key] = decode(model, value, self.settings.max_message_bytes)
        except ContractError as error:
            batch.rejected += 1
            self._dead_letter(message, error)

    def _add_id(self, batch: FetchedBatch, message: Record) -> None:
        if message.value is None:  # assignments are never withdrawn: a tombstone only compacts a version away
            return
        try:
            batch.ids.append(decode(ItemSemanticId, message.value, self.settings.max_message_bytes))
        except ContractError as error:
            batch.rejected += 1
            self._dead_letter(message, error)

    def _dead_letter(self, message: Record, error: ContractError) -> None:
        letter = DeadLetter(
            error.reason,
            error.detail,
            message.topic,
            message.partition,
            message.offset,
            AGENT,
            message.key,
            message.value,
        )
        if self._dead_letters is None:
            self._dead_letters = producer(self.bootstrap, {"linger.ms": 5})
        send_dead_letter(self.settings, letter, producer_send(self._dead_letters))

    def _count(self, item_id: str) -> int:
        raw = self.follower.get(POPULARITY + item_id.encode())
        return 0 if raw is None else int(raw)


def _new_entries(previous: UserFeatureUpdate | None, update: UserFeatureUpdate) -> list[str]:
    """Items of the interactions in ``update`` that ``previous`` did not hold yet (a replayed update adds none)."""
    if previous is None:
        return [entry.item_id for entry in update.history]
    if update.version <= previous.version:
        return []
    return [entry.item_id for entry in update.history if entry.event_time > previous.as_of]
