"""The interest worker: debounced interest requests in, beyond-log interests and reasoning steps out, near-line.

One consumer-group member per process (``reaseq interests``). Each fetched batch keeps the newest request per
user, drops users whose history version already has interests from the current model (an unchanged history
is never recomputed), runs one batched diffusion inference for the rest, publishes an ``InterestResult`` per
user on the compacted interests topic, stores it in the local interests table, and only then commits. When the
model version has a mined reasoning pattern (a distilled ranker reads it), the worker also fills that pattern
for each history and publishes the ordered step texts and vectors as ``UserReasoning`` on ``user-reasoning``; items
published after the version was trained count in the steps too, from their knowledge (``workers.late_items``).
The pattern is filled by the reasoner it was mined with: the embedded one, or, for a ``vllm`` pattern, the LLM at
``REASEQ_LLM_URL`` (in a worker thread, chains of the batch concurrently). While that server is down the circuit
breaker holds the batch, uncommitted, and retries it; a user whose chain the LLM could not write gets no steps.

The model is that of the ranker version the model registry says is served when its repository is on this machine (the local
stack), else the newest version in the model store that has an interest model; a change (a promotion, a rollback,
a newer version) is picked up between batches. Until one exists the worker waits without fetching, so requests queue in the topic and are
all answered once a model is trained. A version that fails to load is logged and tried again at the next check, while
the model loaded before keeps answering. Requests that do not decode go to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kafka_adapter.batches import AsyncProducer, Record, consume_batches
from models.diffusion import InterestDiffusion
from models.text_encoder import DEFAULT_MODEL, TextEncoder
from reaseq.contracts import InferredItem, InterestRequest, InterestResult, UserReasoning, utcnow
from reaseq.metrics import INTEREST_INFERENCE, INTEREST_LATENCY, LLM_UNAVAILABLE, REQUESTS_SKIPPED, serve_metrics
from reaseq.settings import Settings
from reaseq.topics import INTEREST_REQUESTS, INTERESTS, USER_REASONING, topic_name
from reaseq.wire import ContractError, decode, encode
from reasoning.breaker import CircuitBreaker
from reasoning.llm import BackendUnavailable
from reasoning.llm_user_reasoner import LLMUserReasoner
from reasoning.patterns import PATTERNS_FILE, REASONING_DIR, PatternLibrary, apply_pattern
from reasoning.user_reasoner import EmbeddedUserReasoner, ItemLabels
from training.registry import INTERESTS_DIR, ITEMS_FILE, has_interest_model, newest_version, served_model, version_of
from workers.batch_worker import LocalIndex, dead_letter, run_until_signalled
from workers.late_items import LateItems

log = logging.getLogger(__name__)
AGENT = "interests"


@dataclass(frozen=True)
class InterestModel:
    """One model version's interest model, its item index, and its reasoning pattern if it has one."""

    version: str
    model: InterestDiffusion
    item_index: dict[str, int]
    item_ids: list[str]
    encoder: TextEncoder  # the version's text encoder: labels of items published since training are embedded with it
    patterns: PatternLibrary | None = None
    reasoner: EmbeddedUserReasoner | LLMUserReasoner | None = None
    late_index: dict[str, int] = field(default_factory=dict)  # items published since training -> reasoner index

    @classmethod
    def load(cls, directory: Path, settings: Settings) -> InterestModel:
        """The version in ``directory``; ``settings`` name the LLM server when its pattern was mined with one."""
        item_ids: list[str] = json.loads((directory / ITEMS_FILE).read_text())
        model = InterestDiffusion.load(directory / INTERESTS_DIR, "cpu")
        encoder = TextEncoder(
            json.loads((directory / "config.json").read_text()).get("encoder", DEFAULT_MODEL), device="cpu"
        )
        patterns: PatternLibrary | None = None
        reasoner: EmbeddedUserReasoner | LLMUserReasoner | None = None
        if (directory / REASONING_DIR / PATTERNS_FILE).is_file():
            patterns = PatternLibrary.load(directory / REASONING_DIR)
            labels = ItemLabels.load(directory / REASONING_DIR)
            if patterns.backend == LLMUserReasoner.backend:
                folder = (patterns.prompt_version or settings.prompt_version).rsplit("-", 1)[0]
                reasoner = LLMUserReasoner(
                    labels, encoder, settings, prompt_folder=folder, mined_with=patterns.llm_model
                )
                if reasoner.prompt_version != patterns.prompt_version:
                    log.warning(
                        "user prompts changed since the pattern was mined",
                        extra={"mined": patterns.prompt_version, "now": reasoner.prompt_version},
                    )
            else:
                reasoner = EmbeddedUserReasoner(labels)
        return cls(
            version_of(directory),
            model,
            {item: i for i, item in enumerate(item_ids)},
            item_ids,
            encoder,
            patterns,
            reasoner,
        )

    def histories(self, requests: list[InterestRequest]) -> list[list[int]]:
        """Each request's history as item indices; items the version does not know are left out."""
        return [[self.item_index[item] for item in request.item_ids if item in self.item_index] for request in requests]

    def infer(self, histories: list[list[int]]) -> list[list[InferredItem]]:
        """Beyond-log items for each history."""
        inferred = self.model.infer(histories)
        return [
            [
                InferredItem(item_id=self.item_ids[item], confidence=round(conf, 5))
                for item, conf in zip(items, confs, strict=True)
                if item >= 0
            ]
            for items, confs in zip(inferred.items.tolist(), inferred.confidences.tolist(), strict=True)
        ]

    def reasoning_histories(self, requests: list[InterestRequest], late: LateItems) -> list[list[int]]:
        """Each history as the reasoner's item indices: the version's items, and items published since whose
        knowledge is out, each covered (given the next free index) the first time it is seen."""
        assert self.reasoner is not None
        histories = []
        for request in requests:
            history = []
            for item in request.item_ids:
                index = self.item_index.get(item, self.late_index.get(item))
                if index is None and (chain := late.chain(item)) is not None:
                    index = self.late_index[item] = len(self.item_ids) + len(self.late_index)
                    self.reasoner.labels.add(index, chain, late.title(item), self.encoder)
                if index is not None:
                    history.append(index)
            histories.append(history)
        return histories


def reasoning_of(model: InterestModel, requests: list[InterestRequest], late: LateItems) -> list[UserReasoning]:
    """The version's best pattern filled for each history (nothing when the version has no pattern, and nothing for
    a user whose chain the LLM could not write). Blocking: the LLM reasoner runs its own event loop."""
    if model.patterns is None or model.reasoner is None:
        return []
    best = model.patterns.best
    chains = apply_pattern(model.reasoner, best, model.reasoning_histories(requests, late))
    return [
        UserReasoning(
            user_id=request.user_id,
            history_version=request.history_version,
            structure=list(best.structure),
            steps=chain.texts,
            step_vectors=[[round(float(x), 5) for x in row] for row in chain.vectors],
            pattern_version=model.patterns.version,
            model_version=model.version,
            created_at=utcnow(),
        )
        for request, chain in zip(requests, chains, strict=True)
        if chain is not None
    ]


def interest_version(settings: Settings) -> Path | None:
    """The version to answer with: the ranker version Triton serves, when its runtime repository is on this machine
    (the local stack, where versions are promoted and rolled back) and it has an interest model; else the newest
    trained version that has one. Serving reads only steps of the served version's pattern, so a version trained
    but not promoted must not take the worker over."""
    served = served_model(settings)
    if served is not None and has_interest_model(served):
        return served
    return newest_version(settings.model_store, having=has_interest_model)


class InterestWorker:
    def __init__(self, settings: Settings, bootstrap: str, poll_s: float = 2.0) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.poll_s = poll_s
        self.table = LocalIndex(
            settings.state_dir / "interests" / settings.app_id, bootstrap, topic_name(settings, INTERESTS)
        )  # user id -> InterestResult
        self.late = LateItems(settings, bootstrap, settings.state_dir / "interests" / f"{settings.app_id}-items")
        self.model: InterestModel | None = None
        self.breaker = CircuitBreaker(
            settings.llm_breaker_failures, settings.llm_breaker_cooldown_s
        )  # for an LLM pattern
        self._checked_at = 0.0
        self._failure: str | None = None  # the last load error logged

    async def run(self, stop: asyncio.Event) -> None:
        self.table.bootstrap(self.settings, InterestResult, lambda r: (r.user_id, encode(r)))
        follower = asyncio.create_task(self.late.follow(stop))
        try:
            if await self._wait_for_model(stop):
                batch = self.settings.interest_batch
                await consume_batches(
                    self.settings, self.bootstrap, AGENT, INTEREST_REQUESTS, batch, self._process, stop
                )
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            self.table.close()
            self.late.close()

    async def _wait_for_model(self, stop: asyncio.Event) -> bool:
        """Check for a loadable interest model every ``poll_s`` until there is one (True) or ``stop`` is set (False)."""
        if self._refresh_model() is None:
            log.info("no interest model yet; waiting", extra={"store": str(self.settings.model_store)})
        while self.model is None and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_s)
            self._refresh_model()
        return self.model is not None

    def _refresh_model(self) -> InterestModel | None:
        """Load the interest model of ``interest_version`` when that changes (checked at most every ``poll_s``).

        A version that fails to load is logged and tried again at the next check; meanwhile the model loaded
        before, if any, keeps answering.
        """
        now = time.monotonic()
        if self.model is not None and now - self._checked_at < self.poll_s:
            return self.model
        self._checked_at = now
        wanted: Path | None = None
        try:
            wanted = interest_version(self.settings)
            if wanted is not None and (self.model is None or self.model.version != version_of(wanted)):
                self.model = InterestModel.load(wanted, self.settings)
                self._failure = None
                log.info("interest model loaded", extra={"version": self.model.version})
        except Exception as error:  # a broken or vanished version must not stop the worker
            failure = f"{type(error).__name__}: {error}"
            if failure != self._failure:  # a version that stays broken is logged once, not at every check
                self._failure = failure
                log.warning(
                    "interest model failed to load; trying again at the next check",
                    extra={
                        "version": None if wanted is None else version_of(wanted),
                        "error": failure,
                        "serving": None if self.model is None else self.model.version,
                    },
                )
        return self.model

    def _unchanged(self, request: InterestRequest, model: InterestModel) -> bool:
        stored = self.table.get(request.user_id)
        if stored is None:
            return False
        result = InterestResult.model_validate_json(stored)
        return result.model_version == model.version and result.history_version >= request.history_version

    async def _process(self, records: list[Record], producer: AsyncProducer) -> None:
        model = self._refresh_model()
        assert model is not None  # run() consumes only once a model is loaded, and a failed reload keeps it
        latest: dict[str, InterestRequest] = {}
        sends = []
        for record in records:
            try:
                request = decode(InterestRequest, record.value, self.settings.max_message_bytes)
            except ContractError as error:
                sends.append(dead_letter(self.settings, producer, record, error.reason, error.detail, AGENT))
                continue
            current = latest.get(request.user_id)
            if current is None or request.history_version >= current.history_version:
                latest[request.user_id] = request
        todo = [request for request in latest.values() if not self._unchanged(request, model)]
        REQUESTS_SKIPPED.labels(AGENT).inc(len(latest) - len(todo))
        histories = model.histories(todo)
        inferred: list[list[InferredItem]] = []
        reasoning: list[UserReasoning] = []
        if todo:
            with INTEREST_INFERENCE.time():
                inferred = await asyncio.to_thread(model.infer, histories)
                reasoning = await self._reasoning(model, todo)
        results = [
            InterestResult(
                user_id=request.user_id,
                history_version=request.history_version,
                interests=interests,
                model_version=model.version,
                created_at=utcnow(),
            )
            for request, interests in zip(todo, inferred, strict=True)
        ]
        topic = topic_name(self.settings, INTERESTS)
        sends += [producer.send_and_wait(topic, encode(result), key=result.user_id.encode()) for result in results]
        steps_topic = topic_name(self.settings, USER_REASONING)
        sends += [producer.send_and_wait(steps_topic, encode(steps), key=steps.user_id.encode()) for steps in reasoning]
        await asyncio.gather(*sends)
        for request, result in zip(todo, results, strict=True):  # only once published
            self.table.put(result.user_id, encode(result))
            INTEREST_LATENCY.observe((utcnow() - request.requested_at).total_seconds())

    async def _reasoning(self, model: InterestModel, requests: list[InterestRequest]) -> list[UserReasoning]:
        """The batch's reasoning steps; while an LLM server is down, held and retried behind the circuit breaker."""
        while True:
            await self.breaker.wait()
            try:
                reasoning = await asyncio.to_thread(reasoning_of, model, requests, self.late)
            except BackendUnavailable as error:
                LLM_UNAVAILABLE.inc()
                self.breaker.failure(error)
                continue
            self.breaker.success()
            return reasoning


def run_interests(settings: Settings, bootstrap: str) -> None:
    """Run one interest worker until SIGTERM or SIGINT."""
    torch.set_num_threads(1)  # inference runs in a worker thread: see serving.runtime for why one thread
    serve_metrics(settings, "interests")
    run_until_signalled(InterestWorker(settings, bootstrap).run)
