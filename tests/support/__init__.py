"""Helpers for integration tests: read topics back, wait for conditions, publish records."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition

from infra.synthetic import SyntheticWorld
from kafka_adapter.publish import producer
from reaseq.contracts import Contract, KnowledgeResult, utcnow
from reaseq.settings import Settings
from reaseq.topics import EVENTS, ITEMS, USER_FEATURES, topic_name
from reaseq.wire import encode


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int
    offset: int


class TopicReader:
    """Reads every partition of a topic from the beginning, without a consumer group."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "tests", "enable.auto.commit": False, "log_level": 0}
        )
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        self.records: list[Record] = []

    def poll(self, seconds: float = 0.2) -> list[Record]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.consumer.poll(0.05)
            if message is None:
                continue
            if message.error() is not None:
                assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                continue
            self.records.append(
                Record(
                    message.key(), message.value(), list(message.headers() or []), message.partition(), message.offset()
                )
            )
        return self.records

    def wait_for(self, condition: Callable[[list[Record]], bool], timeout_s: float = 60.0) -> list[Record]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition(self.poll()):
                return self.records
        raise AssertionError(f"condition not met within {timeout_s}s; {len(self.records)} records seen")

    def close(self) -> None:
        self.consumer.close()


def latest_by_key(records: Iterable[Record]) -> dict[bytes, bytes]:
    """What a compacted topic converges to."""
    return {r.key: r.value for r in records if r.key is not None and r.value is not None}


def send(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> None:
    out = producer(bootstrap)
    for key, value in records:
        out.produce(topic, key=key, value=value)
    assert out.flush(30) == 0


def send_contracts(bootstrap: str, topic: str, messages: Iterable[Contract], key: Callable[[Contract], str]) -> None:
    send(bootstrap, topic, ((key(m).encode(), encode(m)) for m in messages))


def publish_world(settings: Settings, bootstrap: str, world: SyntheticWorld, timeout_s: float = 120.0) -> TopicReader:
    """Publish a generated world's items and interactions and wait until the stream has every user's history.

    Returns the user-features reader; its records end with each user's final history.
    """
    send_contracts(bootstrap, topic_name(settings, ITEMS), world.items, lambda m: m.item_id)  # type: ignore[attr-defined]
    send_contracts(bootstrap, topic_name(settings, EVENTS), world.interactions, lambda m: m.user_id)  # type: ignore[attr-defined]
    users = {interaction.user_id for interaction in world.interactions}
    reader = TopicReader(bootstrap, topic_name(settings, USER_FEATURES))
    reader.wait_for(lambda records: len(latest_by_key(records)) == len(users), timeout_s=timeout_s)
    return reader


# A valid answer per LLM output model, by schema name (the reasoning-chain tests script their backend with them).
ANSWERS = {
    "AttributesStep": {
        "rationale": "The text says waterproof nylon.",
        "attributes": ["waterproof"],
        "materials": ["nylon"],
    },
    "UsageStep": {"rationale": "Hiking in the rain.", "scenarios": ["hiking"], "seasons": ["autumn"]},
    "AudienceStep": {"rationale": "Hikers buy shells.", "audiences": ["hikers"]},
    "NeedsStep": {"rationale": "Hikers need boots.", "complements": ["boots"], "substitutes": ["rain poncho"]},
    "Critique": {"consistent": True, "problems": []},
    "SummaryStep": {"rationale": "Agreed by all steps.", "summary": "A waterproof nylon shell for hikers."},
}


# TrainConfig fields of a model small enough to train in seconds (the model, not its quality, is under test).
TINY_TRAINING = {
    "item_text": "catalog",
    "rqvae": {"codebook_size": 8, "epochs": 20, "batch_size": 128},
    "ranker": {"d_model": 32, "d_kv": 16, "num_heads": 2, "d_ff": 64, "num_encoder_layers": 1, "num_decoder_layers": 1},
    "epochs": 2,
    "eval_every": 1,
    "batch_size": 64,
    "beam_size": 10,
    "interests": {
        "model": {"d_model": 32, "num_heads": 2, "d_ff": 64, "num_layers": 1, "horizon": 4, "sampling_steps": 2},
        "epochs": 2,
    },
}


def knowledge_result(item_id: str, value: float, width: int = 4) -> KnowledgeResult:
    """Published knowledge for ``item_id``: the canned chain of ``ANSWERS`` and a constant fused vector."""
    steps = {
        "attributes": "AttributesStep",
        "usage": "UsageStep",
        "audience": "AudienceStep",
        "needs": "NeedsStep",
        "summary": "SummaryStep",
    }
    return KnowledgeResult(
        item_id=item_id,
        content_hash="h",
        chain={name: ANSWERS[step] for name, step in steps.items()},
        step_vectors=[[0.1] * width] * 5,
        fused_vector=[value] * width,
        encoder="minilm",
        backend="embedded",
        model="m",
        prompt_version="none",
        created_at=utcnow(),
    )
