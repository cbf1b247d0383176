"""Enrichment through a real vLLM server (its own environment, a tiny random model built here) and the stream."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from pydantic import BaseModel, SecretStr

from infra.processes import spawn_async_worker, stop_process
from infra.synthetic import generate
from infra.vllm import VLLMServer
from reaseq.contracts import DeadLetterReason, KnowledgeResult, utcnow
from reaseq.deadletters import DeadLetter
from reaseq.settings import Settings
from reaseq.topics import DEAD_LETTERS, ITEMS, KNOWLEDGE, topic_name
from reasoning.llm import BackendUnavailable, ChatBackend
from tests.conftest import LLM_API_KEY, Spawn
from tests.support import TopicReader, send_contracts

pytestmark = pytest.mark.integration

LLM_OUTAGE_S = 30.0  # the LLM server is stopped this long while items are requested


def with_llm(settings: Settings, server: VLLMServer, **overrides: object) -> Settings:
    return settings.model_copy(
        update={
            "llm_backend": "vllm",
            "llm_url": server.base_url,
            "llm_api_key": SecretStr(LLM_API_KEY),
            "llm_max_tokens": 2048,
            "llm_concurrency": 4,
            "llm_breaker_cooldown_s": 1.0,
            **overrides,
        }
    )


def publish(settings: Settings, items: list) -> None:  # type: ignore[type-arg]
    assert settings.kafka_bootstrap
    send_contracts(settings.kafka_bootstrap, topic_name(settings, ITEMS), items, lambda m: m.item_id)  # type: ignore[attr-defined]


def test_vllm_enriches_items_and_a_server_outage_loses_nothing(
    settings: Settings, workers: Spawn, llm: VLLMServer
) -> None:
    settings = with_llm(settings, llm)
    assert settings.kafka_bootstrap
    workers("w0")
    enrichment = spawn_async_worker(settings, settings.kafka_bootstrap, "enrich")
    try:
        items = generate(30, 2, 4, seed=4).items
        knowledge = TopicReader(settings.kafka_bootstrap, topic_name(settings, KNOWLEDGE))
        publish(settings, items[:2])
        records = knowledge.wait_for(lambda rs: len({r.key for r in rs}) == 2, timeout_s=300)
        result = KnowledgeResult.model_validate_json(records[0].value or b"")
        assert result.backend == "vllm" and result.model == llm.name and result.prompt_version.startswith("v1-")
        assert len(result.step_vectors) == 5

        llm.stop()
        stopped = time.monotonic()
        publish(settings, items[2:5])  # requested while the server is down: they wait, nothing is dropped
        time.sleep(LLM_OUTAGE_S)
        log = settings.state_dir / "run" / "enrich.log"
        assert "circuit open" in log.read_text()
        assert len({r.key for r in knowledge.poll(1.0)}) == 2
        llm.start()
        back, back_at = time.monotonic(), utcnow()
        records = knowledge.wait_for(lambda rs: len({r.key for r in rs}) == 5, timeout_s=300)
        enriched_s = time.monotonic() - back
        records = knowledge.poll(5.0)  # time for a second enrichment of any of them to show
        enriched = {r.key.decode(): KnowledgeResult.model_validate_json(r.value or b"") for r in records if r.key}
        assert Counter(r.key.decode() for r in records if r.key) == {item.item_id: 1 for item in items[:5]}  # once each
        assert all(enriched[item.item_id].created_at >= back_at for item in items[2:5])  # held, then done after
        assert "circuit closed" in log.read_text()
        print(
            f"LLM server unavailable {back - stopped:.0f}s (stopped {LLM_OUTAGE_S:.0f}s, then starting); "
            f"the held items were enriched {enriched_s:.1f}s after it answered again"
        )
        dead = TopicReader(settings.kafka_bootstrap, topic_name(settings, DEAD_LETTERS)).poll(1.0)
        assert not [r for r in dead if DeadLetter.from_record(r.key, r.value, r.headers).agent == "enrichment"]
    finally:
        stop_process(enrichment.pid, timeout_s=20)


def test_malformed_output_is_retried_then_dead_lettered(settings: Settings, workers: Spawn, llm: VLLMServer) -> None:
    # Without constrained decoding the random model's text is not JSON: every answer is invalid.
    settings = with_llm(settings, llm, llm_guided=False, llm_max_tokens=32, llm_retries=1)
    assert settings.kafka_bootstrap
    workers("w0")
    enrichment = spawn_async_worker(settings, settings.kafka_bootstrap, "enrich")
    try:
        items = generate(30, 2, 4, seed=5).items[:2]
        publish(settings, items)
        dead = TopicReader(settings.kafka_bootstrap, topic_name(settings, DEAD_LETTERS))
        letters = dead.wait_for(lambda rs: len(rs) == 2, timeout_s=300)
        for letter in (DeadLetter.from_record(r.key, r.value, r.headers) for r in letters):
            assert letter.agent == "enrichment" and letter.reason is DeadLetterReason.INVALID_OUTPUT
            assert letter.detail.startswith("attributes: not valid JSON")
        log = (settings.state_dir / "run" / "enrich.log").read_text()
        logged = [
            line for line in log.splitlines() if '"record dead-lettered"' in line and '"agent":"enrichment"' in line
        ]
        assert len(logged) == 2 and enrichment.poll() is None  # still running
    finally:
        stop_process(enrichment.pid, timeout_s=20)


class Greeting(BaseModel):
    text: str


def test_the_configured_api_key_is_sent_and_a_refused_one_is_said_plainly(llm: VLLMServer) -> None:
    """The server asks for a key: the configured one answers; none, or a wrong one, is an outage that names the
    setting (the breaker then waits) rather than a bad answer that would dead-letter the item."""

    async def ask(key: SecretStr | None) -> str:
        backend = ChatBackend(llm.base_url, llm.name, timeout_s=60.0, max_tokens=8, guided=False, api_key=key)
        try:
            return await backend.complete([{"role": "user", "content": "hello"}], Greeting)
        finally:
            await backend.close()

    assert isinstance(asyncio.run(ask(SecretStr(LLM_API_KEY))), str)
    for key in (None, SecretStr("not-the-key")):
        with pytest.raises(BackendUnavailable, match=r"refused the API key \(REASEQ_LLM_API_KEY\)"):
            asyncio.run(ask(key))
