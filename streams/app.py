"""The Faust app of one state generation: its topics and RocksDB tables, which the agents of ``streams.topology`` use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faust
from faust.types import TableT, TopicT

from kafka_adapter.aio_clients import faust_credentials
from kafka_adapter.clients import faust_broker_url
from reaseq.settings import Settings
from reaseq.topics import (
    BY_ITEM,
    BY_USER,
    DEAD_LETTERS,
    ENRICHMENT_REQUESTS,
    EVENTS,
    INTEREST_REQUESTS,
    ITEM_FEATURES,
    ITEMS,
    USER_FEATURES,
    TopicSpec,
    partitions_of,
    topic_name,
)


@dataclass(frozen=True)
class StreamTopics:
    items: TopicT
    events: TopicT
    by_item: TopicT
    by_user: TopicT
    item_features: TopicT
    user_features: TopicT
    enrichment_requests: TopicT
    interest_requests: TopicT
    dead_letters: TopicT


@dataclass(frozen=True)
class StreamTables:
    items: TableT  # item_id -> ItemState
    pending: TableT  # item_id -> PendingInteractions
    histories: TableT  # user_id -> UserState
    interest_due: TableT  # user_id (bytes) -> history version whose trailing interest request is still to be sent


@dataclass(frozen=True)
class StreamApp:
    """The Faust app with its topics and tables, handed to the agent modules that register on it."""

    app: faust.App
    settings: Settings
    generation: int
    topics: StreamTopics
    tables: StreamTables


def worker_datadir(settings: Settings, generation: int, worker_name: str) -> Path:
    """Local RocksDB folder of one worker of one generation (workers on one machine must not share it)."""
    return settings.state_dir / "workers" / f"g{generation}" / worker_name


def create_app(
    settings: Settings, bootstrap: str, generation: int, worker_name: str = "w0", embedded_broker: bool = False
) -> StreamApp:
    """The stream app of ``generation``, its topics and tables, no agents yet (``streams.topology`` adds them).

    ``embedded_broker`` selects the transport that corrects tansu's high watermarks (kafka_adapter.tansu_transport).
    """
    datadir = worker_datadir(settings, generation, worker_name)
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_name(generation),
        broker=faust_broker_url(bootstrap, embedded_broker),
        broker_credentials=faust_credentials(settings),
        store="rocksdb://",
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        # Topics, changelogs included, are provisioned by kafka_adapter.provision; the app never creates any.
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=settings.worker_web_port is not None,
        web_port=settings.worker_web_port or 6066,
        web_bind="127.0.0.1",
        broker_commit_interval=1.0,
        # The embedded broker holds a join for the whole rebalance timeout: keep it short.
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=1.0,
        producer_linger_ms=settings.producer_linger_ms,
        stream_wait_empty=False,
        table_cleanup_interval=3600.0,
    )

    def topic(spec: TopicSpec) -> TopicT:
        return app.topic(
            topic_name(settings, spec, generation),
            key_type=bytes,
            value_type=bytes,
            # Agents see the original bytes: validation and dead-lettering are ours, not a codec's.
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions_of(settings, spec),
            internal=False,
        )

    def table(name: str, key_type: type = str, use_partitioner: bool = False) -> TableT:
        return app.Table(
            name,
            key_type=key_type,
            value_type=bytes,
            default=None,
            partitions=settings.partitions,
            use_partitioner=use_partitioner,
        )

    stream_app = StreamApp(
        app=app,
        settings=settings,
        generation=generation,
        topics=StreamTopics(
            items=topic(ITEMS),
            events=topic(EVENTS),
            by_item=topic(BY_ITEM),
            by_user=topic(BY_USER),
            item_features=topic(ITEM_FEATURES),
            user_features=topic(USER_FEATURES),
            enrichment_requests=topic(ENRICHMENT_REQUESTS),
            interest_requests=topic(INTEREST_REQUESTS),
            dead_letters=topic(DEAD_LETTERS),
        ),
        tables=StreamTables(
            items=table("items"),
            pending=table("pending"),
            histories=table("histories"),
            # Written by a timer too, outside any event, so its changelog partition comes from the key: raw bytes (a
            # str key would be JSON-quoted), so that it is the user's by-user partition.
            interest_due=table("interest-due", key_type=bytes, use_partitioner=True),
        ),
    )
    return stream_app
