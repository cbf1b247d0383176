"""One follower of compacted topics into a local RocksDB folder, for every process that keeps a local view of
published state: the serving replica, the asynchronous workers' indexes of what they published, the interest
worker's late items and the operator page.

No consumer group: every follower reads every partition, from where its folder says it stopped (the beginning for
a new folder). A fetch's entries and the offsets it reaches are written in one RocksDB write batch, so the view and
its position never disagree: a restarted follower resumes where it stopped, and one on a new disk rebuilds the view
from the topics.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from rocksdict import Options, Rdict, WriteBatch

from kafka_adapter.clients import Config, Record, consumer, record_of
from kafka_adapter.offsets import Partition, exact_end_offsets, list_partitions

log = logging.getLogger(__name__)

OFFSET = b"\x00offset/"  # + topic/partition: the next offset to read; sorts before every printable key
Entries = Mapping[bytes, bytes | None]  # key -> value to store, or None to delete


class Follower:
    """Compacted ``topics`` followed into the RocksDB folder ``path`` (one follower per folder).

    ``fresh`` empties the folder first, for a view that must not outlive its broker (the embedded one keeps topics
    in memory only). ``config`` adds consumer properties (a short ``fetch.wait.max.ms`` for a reader on the request
    path).
    """

    def __init__(
        self, path: Path, bootstrap: str, topics: Sequence[str], fresh: bool = False, config: Config | None = None
    ) -> None:
        if fresh:
            shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self.db = Rdict(str(path), options)
        self.bootstrap = bootstrap
        self.topics = tuple(topics)
        self._config = {"log_level": 0, **(config or {})}
        self._consumer: Consumer | None = None  # made at the first fetch: a follower that is only read needs none
        self._assigned: set[str] = set()
        self._next_assign = 0.0  # monotonic time of the next look for topics not assigned yet

    # -- the view ---------------------------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        """Store an entry outside a fetch (what the owner itself published)."""
        self.db[key] = value

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Entries whose key starts with ``prefix``, in key order."""
        iterator = self.db.iter()
        iterator.seek(prefix)
        while iterator.valid():
            key = iterator.key()
            if not key.startswith(prefix):
                break
            yield key, iterator.value()
            iterator.next()

    def positions(self) -> dict[Partition, int]:
        """The next offset to read, per partition read so far."""
        found = {}
        for key, raw in self.scan(OFFSET):
            topic, _, partition = key[len(OFFSET) :].decode().rpartition("/")
            found[(topic, int(partition))] = int(raw)
        return found

    # -- following --------------------------------------------------------------------------------------------

    def missing_topics(self) -> list[str]:
        """The followed topics that do not exist (yet)."""
        existing = {topic for topic, _ in list_partitions(self.bootstrap, self.topics)}
        return [topic for topic in self.topics if topic not in existing]

    def fetch(self, timeout_s: float = 0.1, max_records: int = 1000) -> list[Record]:
        """The next records, not yet applied: pass them to :meth:`apply` with the entries they make. Topics
        created after the follower started are picked up."""
        if len(self._assigned) < len(self.topics) and time.monotonic() >= self._next_assign:
            self._assign_new()
            self._next_assign = time.monotonic() + 1.0
        if not self._assigned:
            time.sleep(timeout_s)
            return []
        messages: list[Record] = []
        for message in self._client().consume(num_messages=max_records, timeout=timeout_s):
            error = message.error()
            if error is None:
                messages.append(record_of(message))
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("follower read error", extra={"topic": message.topic(), "error": str(error)})
        return messages

    def apply(self, entries: Entries, positions: Mapping[Partition, int]) -> None:
        """Write ``entries`` (None deletes a key) and the next offsets to read, ``positions``, atomically."""
        if not entries and not positions:  # an empty fetch: the followers' loops poll often
            return
        writes = WriteBatch(raw_mode=True)
        for key, value in entries.items():
            if value is None:
                writes.delete(key)
            else:
                writes.put(key, value)
        for (topic, partition), offset in positions.items():
            writes.put(OFFSET + f"{topic}/{partition}".encode(), str(offset).encode())
        self.db.write(writes)

    def catch_up(self, entries_of: Callable[[Record], Entries], timeout_s: float = 60.0) -> int:
        """Apply every record up to the end the topics have now, each as ``entries_of`` maps it; the count read."""
        ends = self.end_offsets()
        deadline = time.monotonic() + timeout_s
        count = 0
        while self.behind(ends) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{', '.join(self.topics)} not read to their end within {timeout_s:.0f} s")
            messages = self.fetch(timeout_s=0.5)
            entries: dict[bytes, bytes | None] = {}
            for message in messages:
                entries.update(entries_of(message))
            self.apply(entries, reached(messages))
            count += len(messages)
        return count

    def end_offsets(self) -> dict[Partition, tuple[int, int]]:
        """(low, end) of every partition of the followed topics, now."""
        return exact_end_offsets(self.bootstrap, list_partitions(self.bootstrap, self.topics))

    def behind(self, ends: Mapping[Partition, tuple[int, int]]) -> int:
        """Records up to ``ends`` not applied yet."""
        applied = self.positions()
        return sum(max(0, end - max(applied.get(partition, 0), low)) for partition, (low, end) in ends.items())

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        self.db.close()

    def _client(self) -> Consumer:
        if self._consumer is None:
            # librdkafka wants a group id even to assign partitions; nothing joins or commits with it.
            self._consumer = consumer(self.bootstrap, "reaseq-follower", self._config)
        return self._consumer

    def _assign_new(self) -> None:
        metadata = self._client().list_topics(timeout=10).topics
        new = [t for t in self.topics if t not in self._assigned and t in metadata and metadata[t].error is None]
        if not new:
            return
        applied = self.positions()
        self._client().incremental_assign(
            [
                TopicPartition(t, p, applied.get((t, p), OFFSET_BEGINNING))
                for t in new
                for p in sorted(metadata[t].partitions)
            ]
        )
        self._assigned |= set(new)
        log.info("following topics", extra={"topics": new})


def reached(records: Sequence[Record]) -> dict[Partition, int]:
    """The next offset to read per partition, once ``records`` are applied."""
    return {(record.topic, record.partition): record.offset + 1 for record in records}
