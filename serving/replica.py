"""A local RocksDB replica of the compacted feature topics (item features, user histories, item knowledge,
inferred interests, user reasoning steps), inside the serving process.

Each fetched batch of records is written with the offsets it reaches in one RocksDB write batch, so the
replica and its position never disagree: a restarted server resumes where it stopped, and a new replica
(empty folder) bootstraps by reading the compacted topics from the beginning. No consumer group is used;
every replica reads every partition. A record that does not decode is dead-lettered and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from pydantic import BaseModel
from rocksdict import Options, Rdict, WriteBatch

from infra.offsets import Partition, exact_end_offsets, list_partitions
from reaseq.contracts import InterestResult, ItemFeatureUpdate, KnowledgeResult, UserFeatureUpdate, UserReasoning
from reaseq.deadletters import DeadLetter
from reaseq.settings import Settings
from reaseq.topics import DEAD_LETTERS, INTERESTS, ITEM_FEATURES, KNOWLEDGE, USER_FEATURES, USER_REASONING, topic_name
from reaseq.wire import ContractError, decode

log = logging.getLogger(__name__)
R = TypeVar("R", bound=BaseModel)

ITEM = b"i/"
USER = b"u/"
KNOWLEDGE_KEY = b"k/"
INTEREST_KEY = b"n/"
REASONING_KEY = b"r/"
POPULARITY = b"p/"
OFFSET = b"o/"
AGENT = "serving-replica"


@dataclass
class FetchedBatch:
    """Decoded records of one fetch, not yet written; ``None`` values are deletions (tombstones)."""

    items: dict[str, ItemFeatureUpdate | None] = field(default_factory=dict)
    users: dict[str, UserFeatureUpdate | None] = field(default_factory=dict)
    knowledge: dict[str, KnowledgeResult | None] = field(default_factory=dict)
    interests: dict[str, InterestResult | None] = field(default_factory=dict)
    reasoning: dict[str, UserReasoning | None] = field(default_factory=dict)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset per partition
    rejected: int = 0

    def __bool__(self) -> bool:
        return bool(self.positions)


class FeatureReplica:
    """Item and user features as of the offsets stored beside them; one writer process per folder."""

    def __init__(self, path: Path, settings: Settings, bootstrap: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self.db = Rdict(str(path), options)
        self.settings = settings
        self.bootstrap = bootstrap
        self.item_topic = topic_name(settings, ITEM_FEATURES)
        self.user_topic = topic_name(settings, USER_FEATURES)
        self.knowledge_topic = topic_name(settings, KNOWLEDGE)
        self.interest_topic = topic_name(settings, INTERESTS)
        self.reasoning_topic = topic_name(settings, USER_REASONING)
        self._consumer: Consumer | None = None
        self._dead_letters: Producer | None = None

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
        raw = self.db.get(prefix + key.encode())
        return None if raw is None else model.model_validate_json(raw)

    def items(self) -> Iterator[ItemFeatureUpdate]:
        for _, raw in self.scan(ITEM):
            yield ItemFeatureUpdate.model_validate_json(raw)

    def all_knowledge(self) -> Iterator[tuple[str, KnowledgeResult]]:
        """Every item's latest knowledge the replica holds."""
        for key, raw in self.scan(KNOWLEDGE_KEY):
            yield key[len(KNOWLEDGE_KEY):].decode(), KnowledgeResult.model_validate_json(raw)

    def popularity(self) -> dict[str, int]:
        """Interactions seen per item since the replica started following the user histories."""
        return {key[len(POPULARITY):].decode(): int(raw) for key, raw in self.scan(POPULARITY)}

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Raw entries under ``prefix`` (also for state that an owner stores beside the features)."""
        iterator = self.db.iter()
        iterator.seek(prefix)
        while iterator.valid():
            key = iterator.key()
            if not key.startswith(prefix):
                break
            yield key, iterator.value()
            iterator.next()

    def positions(self) -> dict[Partition, int]:
        found = {}
        for key, raw in self.scan(OFFSET):
            topic, _, partition = key[len(OFFSET):].decode().rpartition("/")
            found[(topic, int(partition))] = int(raw)
        return found

    # -- following the topics -------------------------------------------------------------------

    def fetch(self, timeout_s: float = 0.1, max_records: int = 1000) -> FetchedBatch:
        """Read the next records (decoded, not yet written): pass the batch to :meth:`write`."""
        consumer = self._consumer or self._start()
        batch = FetchedBatch()
        for message in consumer.consume(num_messages=max_records, timeout=timeout_s):
            if message.error():
                log.warning("feature topic read error", extra={"error": str(message.error())})
                continue
            batch.positions[(message.topic(), message.partition())] = message.offset() + 1
            self._add(batch, message)
        return batch

    def write(self, batch: FetchedBatch, extra: Mapping[bytes, bytes] | None = None) -> dict[str, int]:
        """Apply ``batch`` and its offsets, plus the owner's ``extra`` entries, in one atomic write.

        Returns the new popularity counts of the items that the batch's interactions touched.
        """
        writes = WriteBatch(raw_mode=True)
        keyed = (
            (ITEM, batch.items),
            (KNOWLEDGE_KEY, batch.knowledge),
            (INTEREST_KEY, batch.interests),
            (REASONING_KEY, batch.reasoning),
        )
        for prefix, records in keyed:
            for key, record in records.items():
                if record is None:
                    writes.delete(prefix + key.encode())
                else:
                    writes.put(prefix + key.encode(), record.model_dump_json().encode())
        counts: dict[str, int] = {}
        for user_id, update in batch.users.items():
            key = USER + user_id.encode()
            if update is None:
                writes.delete(key)
                continue
            for entry in _new_entries(self.user(user_id), update):
                counts[entry] = counts.get(entry, self._count(entry)) + 1
            writes.put(key, update.model_dump_json().encode())
        for item_id, count in counts.items():
            writes.put(POPULARITY + item_id.encode(), str(count).encode())
        for (topic, partition), offset in batch.positions.items():
            writes.put(OFFSET + f"{topic}/{partition}".encode(), str(offset).encode())
        for key, value in (extra or {}).items():
            writes.put(key, value)
        self.db.write(writes)
        return counts

    @property
    def topics(self) -> tuple[str, ...]:
        return (self.item_topic, self.user_topic, self.knowledge_topic, self.interest_topic, self.reasoning_topic)

    def end_offsets(self) -> dict[Partition, tuple[int, int]]:
        """(low, end) of every partition of the followed topics, now."""
        return exact_end_offsets(self.bootstrap, list_partitions(self.bootstrap, self.topics))

    def behind(self, ends: Mapping[Partition, tuple[int, int]]) -> int:
        """Records up to ``ends`` that this replica has not applied yet."""
        applied = self.positions()
        return sum(max(0, end - max(applied.get(partition, 0), low)) for partition, (low, end) in ends.items())

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._dead_letters is not None:
            self._dead_letters.flush(10)
        self.db.close()

    # -- internals ------------------------------------------------------------------------------

    def _start(self) -> Consumer:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"{self.settings.app_id}-serving-replica",  # required by the client; never joined
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
                "log_level": 3,
            }
        )
        applied = self.positions()
        partitions = list_partitions(self.bootstrap, self.topics)
        if len({topic for topic, _ in partitions}) < len(self.topics):
            raise RuntimeError(f"feature topics {', '.join(self.topics)} do not all exist: provision first")
        consumer.assign([TopicPartition(t, p, applied.get((t, p), OFFSET_BEGINNING)) for t, p in partitions])
        self._consumer = consumer
        return consumer

    def _add(self, batch: FetchedBatch, message: Message) -> None:
        key = (message.key() or b"").decode("utf-8", "replace")
        value = message.value()
        target, model = {
            self.item_topic: (batch.items, ItemFeatureUpdate),
            self.user_topic: (batch.users, UserFeatureUpdate),
            self.knowledge_topic: (batch.knowledge, KnowledgeResult),
            self.interest_topic: (batch.interests, InterestResult),
            self.reasoning_topic: (batch.reasoning, UserReasoning),
        }[message.topic()]
        if value is None:
            target[key] = None
            return
        try:
            target[key] = decode(model, value, self.settings.max_message_bytes)  # type: ignore[type-var]
        except ContractError as error:
            batch.rejected += 1
            self._dead_letter(message, error)

    def _dead_letter(self, message: Message, error: ContractError) -> None:
        log.warning("bad feature record dead-lettered", extra={"topic": message.topic(), "reason": error.reason.value})
        letter = DeadLetter(
            error.reason, error.detail, message.topic(), message.partition(), message.offset(), AGENT,
            message.key(), message.value(),
        )
        if self._dead_letters is None:
            self._dead_letters = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        self._dead_letters.produce(
            self.settings.topic(DEAD_LETTERS.name), key=message.key(), value=message.value(), headers=letter.headers()
        )
        self._dead_letters.poll(0)

    def _count(self, item_id: str) -> int:
        raw = self.db.get(POPULARITY + item_id.encode())
        return 0 if raw is None else int(raw)


def _new_entries(previous: UserFeatureUpdate | None, update: UserFeatureUpdate) -> list[str]:
    """Items of the interactions in ``update`` that ``previous`` did not hold yet (a replayed update adds none)."""
    if previous is None:
        return [entry.item_id for entry in update.history]
    if update.version <= previous.version:
        return []
    return [entry.item_id for entry in update.history if entry.event_time > previous.as_of]
