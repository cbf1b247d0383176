"""Enrichment through the stream with the embedded reasoner: real broker, stream worker and enrichment worker."""

from __future__ import annotations

from datetime import timedelta

import pytest

from infra.processes import spawn_async_worker, stop_process
from infra.synthetic import generate
from reaseq.contracts import DeadLetterReason, EnrichmentRequest, KnowledgeResult, utcnow
from reaseq.deadletters import DeadLetter
from reaseq.settings import Settings
from reaseq.topics import DEAD_LETTERS, ENRICHMENT_REQUESTS, ITEMS, KNOWLEDGE, topic_name
from tests.conftest import Spawn
from tests.support import TopicReader, send, send_contracts

pytestmark = pytest.mark.integration


def test_items_get_knowledge_once_per_content_and_bad_requests_are_dead_lettered(
    settings: Settings, workers: Spawn
) -> None:
    bootstrap = settings.kafka_bootstrap
    assert bootstrap
    workers("w0")
    enrichment = spawn_async_worker(settings, bootstrap, "enrich")
    try:
        items = generate(40, 2, 4, seed=8).items[:6]
        send_contracts(bootstrap, topic_name(settings, ITEMS), items, lambda m: m.item_id)  # type: ignore[attr-defined]
        send(bootstrap, topic_name(settings, ENRICHMENT_REQUESTS), [(b"broken", b"{not json")])
        knowledge = TopicReader(bootstrap, topic_name(settings, KNOWLEDGE))
        records = knowledge.wait_for(lambda rs: len({r.key for r in rs}) == 6, timeout_s=180)
        results = {r.key.decode(): KnowledgeResult.model_validate_json(r.value) for r in records if r.key and r.value}
        for item in items:
            result = results[item.item_id]
            assert result.content_hash == item.content_hash() and result.backend == "embedded"
            assert len(result.step_vectors) == 5 and all(len(v) == 384 for v in result.step_vectors)
            assert item.title in result.chain.summary.summary

        dead = TopicReader(bootstrap, topic_name(settings, DEAD_LETTERS))
        letters = dead.wait_for(
            lambda rs: any(DeadLetter.from_record(r.key, r.value, r.headers).agent == "enrichment" for r in rs)
        )
        letter = next(
            letter
            for letter in (DeadLetter.from_record(r.key, r.value, r.headers) for r in letters)
            if letter.agent == "enrichment"
        )
        assert letter.reason is DeadLetterReason.MALFORMED_JSON and letter.value == b"{not json"

        # The same content again is skipped; a changed item is enriched again (same partition, so in this order).
        first = items[0]
        changed = first.model_copy(
            update={"title": first.title + " (2026 edition)", "event_time": first.event_time + timedelta(days=1)}
        )
        requests = [
            EnrichmentRequest(
                item_id=first.item_id, content_hash=first.content_hash(), item=first, requested_at=utcnow()
            ),
            EnrichmentRequest(
                item_id=first.item_id, content_hash=changed.content_hash(), item=changed, requested_at=utcnow()
            ),
        ]
        send_contracts(bootstrap, topic_name(settings, ENRICHMENT_REQUESTS), requests, lambda m: m.item_id)  # type: ignore[attr-defined]
        records = knowledge.wait_for(
            lambda rs: any(
                KnowledgeResult.model_validate_json(r.value).content_hash == changed.content_hash()
                for r in rs
                if r.value
            )
        )
        assert sum(r.key == first.item_id.encode() for r in records) == 2
    finally:
        stop_process(enrichment.pid, timeout_s=20)
