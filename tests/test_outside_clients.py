"""Records published by clients other than the CLI are processed exactly as the CLI's: two deployments on one broker
get the same records, one through ``reaseq publish``'s code, the other through kafka-python's console producer
(keyless lines) and a plain confluent-kafka producer (keys of its own, foreign headers, its default partitioner).

kcat cannot be that client against the embedded broker: Debian's kcat 1.7.1 is built on librdkafka 2.0.2, which
misreads the tagged fields tansu writes into every ApiVersions v3 answer. The README says why and shows the
commands."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from confluent_kafka import Producer

from infra.processes import spawn_worker, stop_process
from infra.synthetic import generate
from kafka_adapter.provision import provision
from kafka_adapter.publish import publish_lines
from reaseq.contracts import UserFeatureUpdate
from reaseq.deadletters import DeadLetter
from reaseq.settings import Settings
from reaseq.topics import DEAD_LETTERS, EVENTS, ITEMS, USER_FEATURES, topic_name
from reaseq.wire import encode
from tests.conftest import Spawn
from tests.support import Record, TopicReader, latest_by_key

pytestmark = pytest.mark.integration

BAD_ITEMS = [b"{broken", b'{"schema_version": 7}']
BAD_EVENTS = [b"not json at all", b'{"schema_version": 1, "user_id": ""}']
HEADERS = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("source", b"catalog-etl")]


def console_produce(bootstrap: str, topic: str, lines: list[bytes]) -> None:
    """kafka-python's console producer, one record per stdin line, no key."""
    done = subprocess.run(
        [sys.executable, "-m", "kafka.producer", "-b", bootstrap, "-t", topic],
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def outcome(settings: Settings, applied: int, dead: int) -> tuple[dict[bytes, list[tuple[str, int]]], Counter[str]]:
    """Each user's final history (item, kind) and version, once ``applied`` events are, and the dead letters by agent
    and reason."""
    assert settings.kafka_bootstrap
    reader = TopicReader(settings.kafka_bootstrap, topic_name(settings, USER_FEATURES))

    def latest(records: list[Record]) -> dict[bytes, UserFeatureUpdate]:
        return {key: UserFeatureUpdate.model_validate_json(value) for key, value in latest_by_key(records).items()}

    # Every user's last update, not the first of each: the users' versions add up to the events applied.
    records = reader.wait_for(lambda rs: sum(u.version for u in latest(rs).values()) >= applied, timeout_s=180)
    histories = {
        key: [(entry.item_id, update.version) for entry in update.history] for key, update in latest(records).items()
    }
    letters = TopicReader(settings.kafka_bootstrap, topic_name(settings, DEAD_LETTERS)).wait_for(
        lambda rs: len(rs) >= dead, timeout_s=120
    )
    reasons = Counter(
        f"{letter.agent}:{letter.reason.value}"
        for letter in (DeadLetter.from_record(r.key, r.value, r.headers) for r in letters)
    )
    return histories, reasons


def test_outside_clients_are_processed_as_the_cli(settings: Settings, workers: Spawn) -> None:
    bootstrap = settings.kafka_bootstrap
    assert bootstrap
    world = generate(40, 12, 10, seed=11)
    item_lines = [encode(item) for item in world.items] + BAD_ITEMS
    event_lines = [encode(interaction) for interaction in world.interactions] + BAD_EVENTS
    users = len({interaction.user_id for interaction in world.interactions})
    dead = len(BAD_ITEMS) + len(BAD_EVENTS)

    workers("w0")  # the CLI's deployment: the stream judges every line, as `reaseq publish --no-validate` leaves it
    publish_lines(settings, bootstrap, "items", item_lines, "cli", validate=False)
    publish_lines(settings, bootstrap, "events", event_lines, "cli", validate=False)

    other = settings.model_copy(
        update={
            "topic_prefix": f"outside-{settings.topic_prefix}",
            "app_id": f"{settings.app_id}-outside",
            "state_dir": settings.state_dir.parent / "outside",
        }
    )
    provision(other, bootstrap, 1)
    worker = spawn_worker(other, bootstrap, 1, "w0")
    try:
        console_produce(bootstrap, topic_name(other, ITEMS), item_lines)
        half = len(event_lines) // 2
        console_produce(bootstrap, topic_name(other, EVENTS), event_lines[:half])
        plain = Producer({"bootstrap.servers": bootstrap})  # librdkafka's defaults: not the CLI's murmur2
        for number, line in enumerate(event_lines[half:]):
            plain.produce(topic_name(other, EVENTS), key=f"etl-{number % 3}".encode(), value=line, headers=HEADERS)
        assert plain.flush(30) == 0

        applied = len({interaction.event_id for interaction in world.interactions})
        cli_histories, cli_reasons = outcome(settings, applied, dead)
        outside_histories, outside_reasons = outcome(other, applied, dead)
    finally:
        stop_process(worker.pid, timeout_s=15)
    assert outside_histories == cli_histories and len(cli_histories) == users
    assert outside_reasons == cli_reasons and sum(cli_reasons.values()) == dead
