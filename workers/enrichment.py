"""The enrichment worker: enrichment requests in, item knowledge out, asynchronously and off the request path.

One consumer-group member per process (``reaseq enrich``). Each fetched batch is deduplicated (an item whose
content hash already has knowledge is skipped), reasoned about with bounded concurrency, encoded into step
vectors and a fused vector in one encoder call, published on the compacted knowledge topic, and only then
committed: a crash re-runs the batch, never skips it. While the LLM server is down the circuit breaker holds
the batch and retries it; nothing is fetched, dropped or committed meanwhile. Requests that do not decode, and
items whose answers stay invalid after every retry, go to the dead-letter topic with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Protocol

from kafka_adapter.batches import AsyncProducer, Record, consume_batches
from kafka_adapter.reader import read_topics
from models.text_encoder import DEFAULT_MODEL, TextEncoder, cache_dir_for
from reaseq.contracts import (
    CatalogItem,
    DeadLetterReason,
    EnrichmentRequest,
    ItemFeatureUpdate,
    KnowledgeChain,
    KnowledgeResult,
    utcnow,
)
from reaseq.metrics import ENRICHMENT_IN_FLIGHT, ENRICHMENT_LATENCY, LLM_UNAVAILABLE, REQUESTS_SKIPPED, serve_metrics
from reaseq.settings import Settings
from reaseq.topics import ENRICHMENT_REQUESTS, ITEM_FEATURES, KNOWLEDGE, topic_name
from reaseq.wire import ContractError, decode, encode
from reasoning.agents import ChainOfAgents, InvalidOutput, LLMReasoner, item_text
from reasoning.breaker import CircuitBreaker
from reasoning.embedded_reasoner import EmbeddedReasoner
from reasoning.knowledge import knowledge_vectors
from reasoning.llm import BackendUnavailable, ChatBackend, first_model
from reasoning.prompts import PromptSet
from workers.batch_worker import LocalIndex, dead_letter, run_until_signalled

log = logging.getLogger(__name__)
AGENT = "enrichment"
Outcome = tuple[KnowledgeChain, list[str]] | InvalidOutput | BackendUnavailable | Exception


class Reasoner(Protocol):
    backend: str
    model: str
    prompt_version: str

    async def reason(self, items: Sequence[CatalogItem]) -> list[Outcome]: ...

    def observe(self, items: Sequence[CatalogItem | ItemFeatureUpdate]) -> None: ...


class EnrichmentWorker:
    def __init__(self, settings: Settings, bootstrap: str, reasoner: Reasoner, encoder: TextEncoder) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.reasoner = reasoner
        self.encoder = encoder
        self.breaker = CircuitBreaker(settings.llm_breaker_failures, settings.llm_breaker_cooldown_s)
        self.index = LocalIndex(
            settings.state_dir / "enrichment" / settings.app_id, bootstrap, topic_name(settings, KNOWLEDGE)
        )  # item id -> published content hash

    async def run(self, stop: asyncio.Event) -> None:
        self.index.bootstrap(self.settings, KnowledgeResult, lambda r: (r.item_id, r.content_hash.encode()))
        catalog = read_topics(self.bootstrap, [topic_name(self.settings, ITEM_FEATURES)], timeout_s=60)
        self.reasoner.observe(
            [
                decode(ItemFeatureUpdate, v, self.settings.max_message_bytes)
                for v in catalog[topic_name(self.settings, ITEM_FEATURES)]
                if v
            ]
        )
        try:
            await consume_batches(
                self.settings,
                self.bootstrap,
                AGENT,
                ENRICHMENT_REQUESTS,
                self.settings.enrich_batch,
                self._process,
                stop,
            )
        finally:
            self.index.close()

    async def _process(self, records: list[Record], producer: AsyncProducer) -> None:
        latest: dict[str, tuple[Record, EnrichmentRequest]] = {}
        sends = []
        for record in records:
            try:
                request = decode(EnrichmentRequest, record.value, self.settings.max_message_bytes)
            except ContractError as error:
                sends.append(self._dead_letter(producer, record, error.reason, error.detail))
                continue
            if self.index.get(request.item_id) == request.content_hash.encode():
                REQUESTS_SKIPPED.labels(AGENT).inc()
                continue
            latest[request.item_id] = (record, request)  # a later version in the same batch supersedes
        ENRICHMENT_IN_FLIGHT.set(len(latest))
        try:
            outcomes = await self._reason([request for _, request in latest.values()])
        finally:
            ENRICHMENT_IN_FLIGHT.set(0)
        enriched = [
            (record, request, outcome) for (record, request), outcome in zip(latest.values(), outcomes, strict=True)
        ]
        good = [(record, request, outcome) for record, request, outcome in enriched if isinstance(outcome, tuple)]
        for record, _, outcome in enriched:
            if isinstance(outcome, InvalidOutput):
                sends.append(self._dead_letter(producer, record, DeadLetterReason.INVALID_OUTPUT, str(outcome)))
            elif isinstance(outcome, Exception):
                sends.append(
                    self._dead_letter(
                        producer, record, DeadLetterReason.PROCESSING, f"{type(outcome).__name__}: {outcome}"
                    )
                )
        if good:
            texts = [item_text(request.item) for _, request, _ in good]
            steps, fused = await asyncio.to_thread(
                knowledge_vectors, self.encoder, texts, [chain for _, _, (chain, _) in good]
            )
            for (_, request, (chain, remarks)), step_vectors, vector in zip(good, steps, fused, strict=True):
                result = KnowledgeResult(
                    item_id=request.item_id,
                    content_hash=request.content_hash,
                    chain=chain,
                    critique=remarks,
                    step_vectors=[[round(float(x), 5) for x in row] for row in step_vectors],
                    fused_vector=[round(float(x), 5) for x in vector],
                    encoder=self.encoder.model_id,
                    backend=self.reasoner.backend,
                    model=self.reasoner.model,
                    prompt_version=self.reasoner.prompt_version,
                    created_at=utcnow(),
                )
                sends.append(
                    producer.send_and_wait(
                        topic_name(self.settings, KNOWLEDGE), encode(result), key=request.item_id.encode()
                    )
                )
        await asyncio.gather(*sends)
        for _, request, _ in good:  # only once published: a crash before this re-enriches, never skips
            self.index.put(request.item_id, request.content_hash.encode())
            ENRICHMENT_LATENCY.observe((utcnow() - request.requested_at).total_seconds())
        self.reasoner.observe([request.item for _, request, _ in good])

    async def _reason(self, requests: list[EnrichmentRequest]) -> list[Outcome]:
        """Outcomes in request order; requests that find the server down wait for the breaker and go again."""
        outcomes: dict[int, Outcome] = {}
        pending = list(range(len(requests)))
        while pending:
            await self.breaker.wait()
            results = await self.reasoner.reason([requests[i].item for i in pending])
            retry = []
            for index, result in zip(pending, results, strict=True):
                if isinstance(result, BackendUnavailable):
                    retry.append(index)
                    LLM_UNAVAILABLE.inc()
                    self.breaker.failure(result)
                else:
                    outcomes[index] = result
            if len(retry) < len(pending):
                self.breaker.success()
            pending = retry
        return [outcomes[i] for i in range(len(requests))]

    def _dead_letter(
        self, producer: AsyncProducer, record: Record, reason: DeadLetterReason, detail: str
    ) -> Awaitable[object]:
        return dead_letter(self.settings, producer, record, reason, detail, AGENT)


async def build_reasoner(settings: Settings, encoder: TextEncoder) -> Reasoner:
    """The configured reasoner: the embedded one, or the agents over the OpenAI-compatible server."""
    if settings.llm_backend == "embedded":
        return EmbeddedReasoner(encoder)  # type: ignore[return-value]
    if not settings.llm_url:
        raise ValueError("REASEQ_LLM_BACKEND=vllm needs REASEQ_LLM_URL (e.g. http://127.0.0.1:8000/v1)")
    model = settings.llm_model or await first_model(settings.llm_url, api_key=settings.llm_api_key)
    backend = ChatBackend(
        settings.llm_url,
        model,
        settings.llm_timeout_s,
        settings.llm_max_tokens,
        settings.llm_guided,
        settings.llm_api_key,
    )
    chain = ChainOfAgents(backend, PromptSet(settings.prompt_version), settings.llm_retries)
    return LLMReasoner(chain, model, settings.llm_concurrency)  # type: ignore[return-value]


def run_enrichment(settings: Settings, bootstrap: str) -> None:
    """Run one enrichment worker until SIGTERM or SIGINT."""

    async def main(stop: asyncio.Event) -> None:
        encoder = TextEncoder(DEFAULT_MODEL, cache_dir=cache_dir_for(settings.state_dir / "enrichment"))
        reasoner = await build_reasoner(settings, encoder)
        await EnrichmentWorker(settings, bootstrap, reasoner, encoder).run(stop)

    serve_metrics(settings, "enrich")
    run_until_signalled(main)
