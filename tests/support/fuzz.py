"""A seeded mix of good source records and fuzzed bad ones, and the exact account the stream must give of it.

The fault tests and the load benchmark (``python -m benchmarks.load``) share it. ``fuzzed_mix`` builds the
records and what must become of each: applied once to its user's history, dead-lettered with a given reason,
or held in the pending table (interactions for an item that is never published, up to the pending limit).
``Tally`` reads the outputs back (user features, dead letters, the pending table's changelog) and ``problems``
lists every difference from that account; ``run_mix`` does the whole run against live stream workers.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from infra.synthetic import generate
from kafka_adapter.offsets import group_lag
from kafka_adapter.publish import producer
from reaseq.contracts import DeadLetterReason
from reaseq.deadletters import DeadLetter
from reaseq.settings import Settings
from reaseq.topics import (
    BY_ITEM,
    BY_USER,
    DEAD_LETTERS,
    EVENTS,
    ITEM_FEATURES,
    ITEMS,
    USER_FEATURES,
    changelog_name,
    topic_name,
)
from reaseq.wire import encode

ORPHAN_PREFIX = "never-published-"  # + the mix's seed: an item no record ever publishes
EPOCH = datetime(2026, 3, 1, tzinfo=UTC)
GENERATION = 1
Raw = tuple[bytes | None, bytes | None]  # key, value
Body = dict[str, Any]
_BYTES = "@@not-utf-8@@"  # placeholder swapped for invalid UTF-8 after JSON encoding


@dataclass(frozen=True)
class BadKind:
    """One way a source record can be bad: its topic, the dead-letter reason it must get, and how to make one
    from a good record's JSON body (``make(rng, body, size_limit)``)."""

    name: str
    topic: str  # ITEMS.name or EVENTS.name
    reason: DeadLetterReason
    make: Callable[[random.Random, Body, int], bytes | None]


def _truncated(rng: random.Random, body: Body, _limit: int) -> bytes:
    raw = orjson.dumps(body)
    return raw[: rng.randrange(1, len(raw))]  # a strict prefix of an object is never valid JSON


def _not_utf8(rng: random.Random, body: Body, _limit: int) -> bytes:
    field_name = rng.choice(["user_id", "item_id"])
    invalid = rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80"])
    return orjson.dumps({**body, field_name: _BYTES}).replace(_BYTES.encode(), invalid)


def _not_an_object(rng: random.Random, body: Body, _limit: int) -> bytes:
    return orjson.dumps(rng.choice([[body], 42, "an event", None, True]))


def _missing_field(rng: random.Random, body: Body, _limit: int) -> bytes:
    dropped = rng.choice(["user_id", "item_id", "kind", "event_time"])
    return orjson.dumps({k: v for k, v in body.items() if k != dropped})


def _wrong_type(rng: random.Random, body: Body, _limit: int) -> bytes:
    name, value = rng.choice(
        [
            ("kind", 3),
            ("kind", "like"),
            ("event_time", "yesterday"),
            ("event_time", [2026]),
            ("user_id", ["u"]),
            ("user_id", None),
            ("item_id", {"id": 1}),
            ("event_id", 7),
        ]
    )
    return orjson.dumps({**body, name: value})


def _unknown_field(rng: random.Random, body: Body, _limit: int) -> bytes:
    return orjson.dumps({**body, rng.choice(["rating", "session", "Kind"]): rng.randint(0, 9)})


def _constraint(rng: random.Random, body: Body, _limit: int) -> bytes:
    name, value = rng.choice(
        [
            ("user_id", "   "),
            ("item_id", ""),
            ("user_id", "u" * 129),
            ("event_time", "2026-03-01T00:00:00"),
        ]  # naive time
    )
    return orjson.dumps({**body, name: value})


def _schema_version(rng: random.Random, body: Body, _limit: int) -> bytes:
    version = rng.choice([2, 99, 0, -1, "1", None, True, "missing"])
    if version == "missing":
        return orjson.dumps({k: v for k, v in body.items() if k != "schema_version"})
    return orjson.dumps({**body, "schema_version": version})


def _oversize(rng: random.Random, body: Body, limit: int) -> bytes:
    return orjson.dumps(body) + b" " * (limit + rng.randint(0, 512))  # valid JSON, one byte or more over the limit


def _bad_item(rng: random.Random, body: Body, _limit: int) -> bytes:
    name, value = rng.choice(
        [("title", ""), ("title", None), ("price", -1.0), ("categories", "Kitchen"), ("event_time", "soon")]
    )
    return orjson.dumps({**body, name: value})


BAD_KINDS: tuple[BadKind, ...] = (
    BadKind("truncated-json", EVENTS.name, DeadLetterReason.MALFORMED_JSON, _truncated),
    BadKind("not-utf-8", EVENTS.name, DeadLetterReason.MALFORMED_JSON, _not_utf8),
    BadKind("empty", EVENTS.name, DeadLetterReason.MALFORMED_JSON, lambda _rng, _body, _limit: b""),
    BadKind("null-value", EVENTS.name, DeadLetterReason.MALFORMED_JSON, lambda _rng, _body, _limit: None),
    BadKind("not-an-object", EVENTS.name, DeadLetterReason.INVALID, _not_an_object),
    BadKind("missing-field", EVENTS.name, DeadLetterReason.INVALID, _missing_field),
    BadKind("wrong-type", EVENTS.name, DeadLetterReason.INVALID, _wrong_type),
    BadKind("unknown-field", EVENTS.name, DeadLetterReason.INVALID, _unknown_field),
    BadKind("constraint", EVENTS.name, DeadLetterReason.INVALID, _constraint),
    BadKind("schema-version", EVENTS.name, DeadLetterReason.UNKNOWN_SCHEMA_VERSION, _schema_version),
    BadKind("oversize", EVENTS.name, DeadLetterReason.OVERSIZE, _oversize),
    BadKind("bad-item", ITEMS.name, DeadLetterReason.INVALID, _bad_item),
    BadKind("truncated-item", ITEMS.name, DeadLetterReason.MALFORMED_JSON, _truncated),
)


@dataclass(frozen=True)
class Mix:
    """Source records in publishing order, and what the stream must make of them."""

    items: list[Raw]
    events: list[Raw]
    applied: dict[str, int]  # user -> distinct good events its history must count (its final version)
    dead_letters: dict[str, int]  # reason -> records that must be dead-lettered
    held: int  # interactions for the never-published item, kept in the pending table
    item_ids: frozenset[str]  # good items
    good_events: int  # distinct
    resent: int  # good events published a second time, byte for byte
    bad: dict[str, int]  # bad kind -> records
    orphans: int  # distinct interactions for the never-published item, each published twice

    def __add__(self, other: Mix) -> Mix:
        """This mix, then ``other``: the account of both (each never-published item is its own, by seed)."""

        def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return dict(Counter(a) + Counter(b))

        return Mix(
            items=self.items + other.items,
            events=self.events + other.events,
            applied=add(self.applied, other.applied),
            dead_letters=add(self.dead_letters, other.dead_letters),
            held=self.held + other.held,
            item_ids=self.item_ids | other.item_ids,
            good_events=self.good_events + other.good_events,
            resent=self.resent + other.resent,
            bad=add(self.bad, other.bad),
            orphans=self.orphans + other.orphans,
        )


def fuzzed_mix(
    settings: Settings,
    good: int,
    bad: int,
    seed: int,
    users: int,
    items: int,
    resent: int = 0,
    orphans: int = 0,
    kinds: Iterable[BadKind] = BAD_KINDS,
    start: datetime = EPOCH,
) -> Mix:
    """``good`` distinct interactions of ``users`` on ``items`` published items, ``resent`` of them published twice,
    ``bad`` fuzzed records (the kinds in turn, each filled at random) and ``orphans`` interactions for an item never
    published, each published twice; interleaved at seeded random positions. The same arguments give the same bytes."""
    rng = random.Random(seed)
    world = generate(n_items=items, n_users=users, n_events=good, seed=seed, start=start)
    item_records: list[tuple[float, Raw]] = [(n, (i.item_id.encode(), encode(i))) for n, i in enumerate(world.items)]
    good_events = [(i.user_id.encode(), encode(i)) for i in world.interactions]
    event_records: list[tuple[float, Raw]] = [(float(n), record) for n, record in enumerate(good_events)]
    for _ in range(resent):  # soon after the original, as a producer's retry would be
        n = rng.randrange(good)
        event_records.append((n + rng.uniform(0.1, 50.0), good_events[n]))

    rotation = tuple(kinds)
    chosen = [rotation[n % len(rotation)] for n in range(bad)]
    bad_counts: Counter[str] = Counter(kind.name for kind in chosen)
    dead_letters: Counter[str] = Counter(kind.reason.value for kind in chosen)
    limit = settings.max_message_bytes
    for kind in chosen:
        if kind.topic == ITEMS.name:
            item = rng.choice(world.items)
            item_records.append(
                (rng.uniform(0, items), (item.item_id.encode(), kind.make(rng, orjson.loads(encode(item)), limit)))
            )
        else:
            event = rng.choice(world.interactions)
            event_records.append(
                (rng.uniform(0, good), (event.user_id.encode(), kind.make(rng, orjson.loads(encode(event)), limit)))
            )

    template = world.interactions[0]
    for n in range(orphans):
        orphan = template.model_copy(
            update={
                "item_id": f"{ORPHAN_PREFIX}{seed}",
                "user_id": f"orphan-{n % 97}",
                "event_id": f"orphan-{seed}-{n}",
            }
        )
        first = rng.uniform(0, good)
        for position in (first, rng.uniform(first, good)):
            event_records.append((position, (orphan.user_id.encode(), encode(orphan))))
    # Kept once each up to the pending limit; each copy of the rest is one more than the table keeps.
    held = min(orphans, settings.pending_limit)
    if orphans > held:
        dead_letters[DeadLetterReason.PENDING_OVERFLOW.value] += 2 * (orphans - held)

    return Mix(
        items=[record for _, record in sorted(item_records, key=lambda pair: pair[0])],
        events=[record for _, record in sorted(event_records, key=lambda pair: pair[0])],
        applied=dict(Counter(i.user_id for i in world.interactions)),
        dead_letters=dict(dead_letters),
        held=held,
        item_ids=frozenset(item.item_id for item in world.items),
        good_events=good,
        resent=resent,
        bad=dict(bad_counts),
        orphans=orphans,
    )


LOAD_LIMITS: dict[str, Any] = {"max_message_bytes": 16_384, "pending_limit": 50}  # settings of the load scenario


def load_mix(settings: Settings, good: int = 100_000, bad: int = 10_000, seed: int = 7) -> Mix:
    """The load scenario (run with LOAD_LIMITS): ``good`` interactions of 2,000 users on 1,000 items, 1 % of them
    re-sent, ``bad`` fuzzed records, and 500 more interactions for an item never published than the pending table
    keeps for it, each published twice."""
    return fuzzed_mix(
        settings,
        good=good,
        bad=bad,
        seed=seed,
        users=2_000,
        items=1_000,
        resent=good // 100,
        orphans=settings.pending_limit + 500,
    )


def publish(bootstrap: str, topic: str, records: Iterable[Raw]) -> int:
    """Produce ``records`` in order, waiting whenever the local queue is full; raises unless all are acknowledged."""
    out = producer(bootstrap)
    failed: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failed.append(error)

    count = 0
    for key, value in records:
        while True:
            try:
                out.produce(topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:  # librdkafka's queue is full: let deliveries drain first
                out.poll(0.05)
        out.poll(0)
        count += 1
    if out.flush(120) != 0 or failed:
        raise RuntimeError(f"{len(failed)} records to {topic} not acknowledged: {failed[:1]}")
    return count


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 1.0) -> None:
    """Check ``condition`` every ``interval_s``; TimeoutError naming ``what`` if it fails for ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(interval_s)


def assigned(settings: Settings, worker: str, topic: str) -> bool:
    """Whether a stream worker's latest partition assignment includes ``topic``, as its log says (at INFO level)."""
    log = settings.state_dir / "run" / f"{worker}.g{GENERATION}.log"
    assignments = (
        [line for line in log.read_text().splitlines() if "Setting newly assigned partitions" in line]
        if log.exists()
        else []
    )
    return bool(assignments) and f"topic='{topic}'" in assignments[-1]


@dataclass
class Tally:
    """What the stream has emitted, read incrementally from the beginning of each output topic.

    Reads lazily (callers sleep between polls): on the embedded broker a fetch costs time in proportion to a
    partition's length, so a reader polling hard slows the workers it watches.
    """

    settings: Settings
    bootstrap: str
    versions: dict[str, int] = field(default_factory=dict)  # user -> latest version emitted
    updates: int = 0  # user-feature records read
    conflicting: int = 0  # (user, version) emitted again with other content: an event applied twice
    repeated_updates: int = 0  # (user, version) emitted again with the same content: a re-run without effect
    dead_letters: Counter[str] = field(default_factory=Counter)  # reason -> distinct source records dead-lettered
    repeated_dead_letters: int = 0  # a source record dead-lettered again (a re-run after a crash)
    item_features: set[str] = field(default_factory=set)
    pending: dict[bytes, bytes | None] = field(default_factory=dict)  # the pending table, from its changelog
    first_update_ms: int | None = None
    last_update_ms: int | None = None
    _emitted: dict[tuple[str, int], int] = field(default_factory=dict)  # (user, version) -> hash of first content
    _letter_sources: set[tuple[str, int, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._handlers: dict[str, Callable[[Message], None]] = {
            topic_name(self.settings, USER_FEATURES): self._update,
            topic_name(self.settings, DEAD_LETTERS): self._dead_letter,
            topic_name(self.settings, ITEM_FEATURES): self._item,
            changelog_name(self.settings, "pending", GENERATION): self._pending,
        }
        self._consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "reaseq-tally",
                "enable.auto.commit": False,
                "log_level": 0,
            }
        )
        metadata = self._consumer.list_topics(timeout=10).topics
        self._consumer.assign([TopicPartition(t, p, 0) for t in self._handlers for p in metadata[t].partitions])

    @property
    def applied(self) -> int:
        """Events applied to histories: the sum of the users' latest versions."""
        return sum(self.versions.values())

    @property
    def held(self) -> int:
        """Interactions waiting in the pending table for their item."""
        return sum(len(orjson.loads(value)["interactions"]) for value in self.pending.values() if value is not None)

    def lost(self, mix: Mix) -> int:
        """Good events of ``mix`` not (yet) applied to their user's history."""
        return sum(max(0, expected - self.versions.get(user, 0)) for user, expected in mix.applied.items())

    def duplicated(self, mix: Mix) -> int:
        """Events applied more than once: versions beyond the account, or one version emitted with two contents."""
        beyond = sum(max(0, version - mix.applied.get(user, 0)) for user, version in self.versions.items())
        return beyond + self.conflicting

    def poll(self) -> int:
        """Read everything that has arrived; returns the number of records read."""
        count = 0
        while messages := self._consumer.consume(num_messages=5000, timeout=0.2):
            for message in messages:
                if message.error() is None:
                    self._handlers[message.topic()](message)
                    count += 1
        return count

    def wait(self, condition: Callable[[Tally], bool], timeout_s: float, what: str) -> None:
        """Poll every second until ``condition`` holds; TimeoutError with the tally so far after ``timeout_s``."""
        try:
            wait_for(lambda: self.poll() >= 0 and condition(self), timeout_s, what)
        except TimeoutError as error:
            so_far = f"{self.applied} events applied, dead letters {dict(self.dead_letters)}, {self.held} held"
            raise TimeoutError(f"{error}; so far {so_far}") from None

    def complete(self, mix: Mix, timeout_s: float) -> None:
        """Wait for the full account of ``mix`` and for the workers' group to commit every input record, then read
        what those last records caused: afterwards nothing more is on its way."""
        letters = sum(mix.dead_letters.values())
        inputs = [topic_name(self.settings, spec, GENERATION) for spec in (ITEMS, EVENTS, BY_ITEM, BY_USER)]
        group = self.settings.app_name(GENERATION)
        try:
            self.wait(
                lambda t: t.lost(mix) == 0 and sum(t.dead_letters.values()) >= letters and t.held >= mix.held,
                timeout_s,
                "every event applied, dead-lettered or held",
            )
        except TimeoutError as error:  # lost (inputs committed) or stalled (inputs waiting): the lag tells which
            short = {
                user: n - self.versions.get(user, 0)
                for user, n in mix.applied.items()
                if self.versions.get(user, 0) < n
            }
            lag = group_lag(self.bootstrap, group, inputs)
            raise TimeoutError(f"{error}; users short of events: {short}; uncommitted inputs: {lag}") from None
        self.wait(
            lambda _: not any(group_lag(self.bootstrap, group, inputs).values()), timeout_s, "every input committed"
        )
        time.sleep(2.0)  # the workers' last produce batches
        self.poll()

    def problems(self, mix: Mix) -> list[str]:
        """Every difference from the account ``mix`` demands; empty when each input is reflected exactly once."""
        found = []
        if lost := self.lost(mix):
            found.append(f"{lost} events lost: {self.applied} applied, {sum(mix.applied.values())} expected")
        if duplicated := self.duplicated(mix):
            found.append(f"{duplicated} events applied twice")
        if dict(self.dead_letters) != mix.dead_letters:
            letters, expected_letters = dict(sorted(self.dead_letters.items())), dict(sorted(mix.dead_letters.items()))
            found.append(f"dead letters by reason {letters}, expected {expected_letters}")
        if self.held != mix.held:
            found.append(f"{self.held} interactions held for unknown items, expected {mix.held}")
        if self.item_features != mix.item_ids:
            found.append(f"{len(self.item_features)} items accepted, expected {len(mix.item_ids)}")
        return found

    def close(self) -> None:
        self._consumer.close()

    def _update(self, message: Message) -> None:
        user, value = message.key().decode(), message.value()
        version, digest = orjson.loads(value)["version"], hash(value)
        first = self._emitted.get((user, version))
        if first is None:
            self._emitted[(user, version)] = digest
        elif first == digest:
            self.repeated_updates += 1
        else:
            self.conflicting += 1
        self.versions[user] = max(version, self.versions.get(user, 0))
        self.updates += 1
        stamp = message.timestamp()[1]
        self.first_update_ms = min(stamp, self.first_update_ms or stamp)
        self.last_update_ms = max(stamp, self.last_update_ms or stamp)

    def _dead_letter(self, message: Message) -> None:
        letter = DeadLetter.from_record(message.key(), message.value(), message.headers())
        source = (letter.source_topic, letter.source_partition, letter.source_offset)
        if source in self._letter_sources:
            self.repeated_dead_letters += 1
        else:
            self._letter_sources.add(source)
            self.dead_letters[letter.reason.value] += 1

    def _item(self, message: Message) -> None:
        self.item_features.add(message.key().decode())

    def _pending(self, message: Message) -> None:
        self.pending[message.key()] = message.value()


@dataclass(frozen=True)
class LoadRun:
    mix: Mix
    tally: Tally
    workers: int
    events: int  # records published on the events topic
    publish_s: float  # publishing them
    elapsed_s: float  # from the first published to the full account, every input committed

    @property
    def events_per_s(self) -> float:
        """Events-topic records accounted for per second, end to end."""
        return self.events / self.elapsed_s

    @property
    def updates_per_s(self) -> float:
        """History updates emitted per second, first to last (the workers' own rate, start-up excluded)."""
        first, last = self.tally.first_update_ms or 0, self.tally.last_update_ms or 0
        return self.tally.updates / max((last - first) / 1000, 1e-3)

    def report(self) -> dict[str, Any]:
        """Every count of the run, published and accounted for, and its rates."""
        mix, tally = self.mix, self.tally
        items_bad = sum(mix.bad.get(kind.name, 0) for kind in BAD_KINDS if kind.topic == ITEMS.name)
        return {
            "published": {
                "items": len(mix.items) - items_bad,
                "items_bad": items_bad,
                "events_good": mix.good_events,
                "events_resent": mix.resent,
                "events_bad": sum(mix.bad.values()) - items_bad,
                "events_for_an_item_never_published": 2 * mix.orphans,
                "records": len(mix.items) + len(mix.events),
            },
            "bad_by_kind": mix.bad,
            "applied": tally.applied,
            "expected_applied": sum(mix.applied.values()),
            "lost": tally.lost(mix),
            "duplicated": tally.duplicated(mix),
            "dead_letters": dict(sorted(tally.dead_letters.items())),
            "expected_dead_letters": dict(sorted(mix.dead_letters.items())),
            "held_pending": tally.held,
            "expected_held_pending": mix.held,
            "items_accepted": len(tally.item_features),
            "re_emitted_identical_updates": tally.repeated_updates,
            "re_emitted_dead_letters": tally.repeated_dead_letters,
            "problems": tally.problems(mix),
            "workers": self.workers,
            "partitions": tally.settings.partitions,
            "publish_s": round(self.publish_s, 1),
            "elapsed_s": round(self.elapsed_s, 1),
            "events_per_s": round(self.events_per_s),
            "updates_per_s": round(self.updates_per_s),
        }


def run_mix(
    settings: Settings, bootstrap: str, mix: Mix, spawn: Callable[[str], object], workers: int, timeout_s: float
) -> LoadRun:
    """Publish ``mix``'s items; start stream workers ``w0``.. with ``spawn`` and wait until the group has given each
    a share; publish the events once every good item is accepted (so only the never-published item's interactions
    wait in the pending table); then follow the outputs to the full account."""
    if settings.log_level not in ("DEBUG", "INFO"):
        raise ValueError("run_mix reads the workers' partition assignments from their INFO logs")
    publish(bootstrap, topic_name(settings, ITEMS), mix.items)
    names = [f"w{n}" for n in range(workers)]
    for name in names:
        spawn(name)
    events = topic_name(settings, EVENTS)
    wait_for(
        lambda: all(assigned(settings, name, events) for name in names), timeout_s, "every worker assigned partitions"
    )
    tally = Tally(settings, bootstrap)
    try:
        tally.wait(lambda t: t.item_features >= mix.item_ids, timeout_s, "every good item accepted")
        started = time.monotonic()
        count = publish(bootstrap, events, mix.events)
        published = time.monotonic()
        tally.complete(mix, timeout_s)
        return LoadRun(mix, tally, workers, count, published - started, time.monotonic() - started)
    finally:
        tally.close()
