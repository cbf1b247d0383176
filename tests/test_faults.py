"""Worker faults: SIGKILL mid-stream, and a consumer group of two that loses a member."""

from __future__ import annotations

import os
import signal
from collections import Counter
from datetime import datetime, timedelta, timezone

from reaseq.contracts import UserFeatureUpdate
from reaseq.settings import Settings
from reaseq.synthetic import generate
from reaseq.topics import EVENTS, ITEMS, USER_FEATURES, topic_name
from tests.conftest import Spawn
from tests.support import Record, TopicReader, latest_by_key, send_contracts


def publish_world(settings: Settings, n_events: int, seed: int) -> Counter[str]:
    """Publish a generated catalog and stream; returns the expected number of distinct events per user."""
    assert settings.kafka_bootstrap
    world = generate(n_items=60, n_users=40, n_events=n_events, seed=seed, start=datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(days=seed))
    send_contracts(settings.kafka_bootstrap, topic_name(settings, ITEMS), world.items, lambda m: m.item_id)  # type: ignore[attr-defined]
    send_contracts(settings.kafka_bootstrap, topic_name(settings, EVENTS), world.interactions, lambda m: m.user_id)  # type: ignore[attr-defined]
    return Counter(i.user_id for i in {i.event_id: i for i in world.interactions}.values())


def versions(records: list[Record]) -> dict[str, int]:
    return {k.decode(): UserFeatureUpdate.model_validate_json(v).version for k, v in latest_by_key(records).items()}


def assert_exactly_once(records: list[Record], expected: Counter[str]) -> None:
    """Every event applied once: final versions match, and no (user, version) was emitted with two contents."""
    assert versions(records) == dict(expected)
    seen: dict[tuple[bytes, int], bytes] = {}
    for record in records:
        assert record.key is not None and record.value is not None
        version = UserFeatureUpdate.model_validate_json(record.value).version
        assert seen.setdefault((record.key, version), record.value) == record.value


def owns_partitions_of(settings: Settings, worker: str, topic: str) -> bool:
    """Whether the worker's latest assignment (from its log) includes a partition of ``topic``."""
    log = (settings.state_dir / "run" / f"{worker}.g1.log").read_text()
    assignments = [line for line in log.splitlines() if "Setting newly assigned partitions" in line]
    return bool(assignments) and f"topic='{topic}'" in assignments[-1]


def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(settings: Settings, workers: Spawn) -> None:
    expected = publish_world(settings, n_events=3000, seed=11)
    assert settings.kafka_bootstrap
    reader = TopicReader(settings.kafka_bootstrap, topic_name(settings, USER_FEATURES))
    victim = workers("w0")
    reader.wait_for(lambda rs: len(rs) >= 300, timeout_s=90)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert sum(versions(reader.poll()).values()) < sum(expected.values()), "killed too late to test anything"
    workers("w0")  # same name: reopens the same local RocksDB folder
    records = reader.wait_for(lambda rs: versions(rs) == dict(expected), timeout_s=120)
    assert_exactly_once(records, expected)


def test_two_workers_split_partitions_and_survive_one_leaving(settings: Settings, workers: Spawn) -> None:
    assert settings.kafka_bootstrap
    first, second = workers("w0"), workers("w1")
    expected = publish_world(settings, n_events=1000, seed=12)
    reader = TopicReader(settings.kafka_bootstrap, topic_name(settings, USER_FEATURES))
    reader.wait_for(lambda rs: versions(rs) == dict(expected), timeout_s=120)
    for name in ("w0", "w1"):  # the group split the source partitions between both members
        assert owns_partitions_of(settings, name, topic_name(settings, EVENTS)), name
    second.send_signal(signal.SIGTERM)
    second.wait(timeout=30)
    more = publish_world(settings, n_events=1000, seed=13)
    combined = expected + more
    records = reader.wait_for(lambda rs: versions(rs) == dict(combined), timeout_s=120)
    assert first.poll() is None
    assert_exactly_once(records, combined)
