"""The one writer of semantic IDs for items published after a model version was trained.

An item's ID comes from the version's frozen RQ-VAE (its first codes) and the next free collision code under that
prefix, so it depends on the order in which items of a taken prefix arrive. Each serving replica assigning IDs itself
could give one item different codes in two replicas; instead this worker assigns them once per version, in one
order, onto the one-partition compacted ``item-ids`` topic, and replicas only read it (``serving.service``).

The worker keeps no state of its own: at start it reads the version's assignments back from ``item-ids`` and the
catalog from the beginning of ``item-features``, assigning only what has no ID yet; an assignment is published and
flushed before the next fetch, so a restart repeats none. It serves the version Triton serves and the newest one
(the two a rollout or a rollback moves between); a deployment runs one writer. Were two to run, replicas would
still agree, since each takes the first ID the topic holds for an item. The topic is the record of the order:
a replay keeps it; another cluster needs it carried over, since re-published items interleave differently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kafka_adapter.clients import Producer, producer
from kafka_adapter.follower import Follower, reached
from kafka_adapter.reader import read_topics
from models.item_text import build_item_text
from models.semantic_ids import SemanticIdTable
from models.text_encoder import TextEncoder
from reaseq.contracts import ItemFeatureUpdate, ItemSemanticId, utcnow
from reaseq.metrics import serve_metrics
from reaseq.settings import Settings
from reaseq.topics import ITEM_FEATURES, ITEM_IDS, topic_name
from reaseq.wire import ContractError, decode, encode
from training.artifact import ModelArtifact
from training.registry import has_id_model, newest_version, served_model, version_of
from workers.batch_worker import run_until_signalled

log = logging.getLogger(__name__)

NEW = "new/"  # table keys of assigned items: trained items are keyed by their index, so never clash with these
READ_TIMEOUT_S = 120.0


def id_versions(settings: Settings) -> list[Path]:
    """The versions to assign IDs for: the served one and the newest, where they have an RQ-VAE."""
    found = {served_model(settings), newest_version(settings.model_store, having=has_id_model)}
    return sorted(version for version in found if version is not None and has_id_model(version))


@dataclass
class VersionIds:
    """One version's ID table, its trained items and where it stands in the catalog."""

    version: str
    table: SemanticIdTable
    trained: frozenset[str]
    encoder: TextEncoder
    catalog: Follower  # item-features from the beginning, each start (the folder is emptied)

    def unassigned(self, items: list[ItemFeatureUpdate]) -> list[ItemFeatureUpdate]:
        """Items that have no ID in this version yet, each once."""
        fresh = {item.item_id: item for item in items if item.item_id not in self.trained}
        return [item for item_id, item in fresh.items() if NEW + item_id not in self.table]


class IdWriter:
    def __init__(self, settings: Settings, bootstrap: str, poll_s: float = 2.0) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.poll_s = poll_s
        self.ids_topic = topic_name(settings, ITEM_IDS)
        self.features_topic = topic_name(settings, ITEM_FEATURES)
        self.versions: dict[str, VersionIds] = {}
        self.producer: Producer = producer(bootstrap, {"enable.idempotence": True, "linger.ms": 5})
        self._checked_at = float("-inf")
        self._failure: str | None = None  # the last load error logged

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                if not await asyncio.to_thread(self.poll):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.2)
        finally:
            self.close()

    def poll(self) -> int:
        """Load or drop versions (every ``poll_s``), then assign and publish the next items each has fetched; the
        count published."""
        if time.monotonic() - self._checked_at >= self.poll_s:
            self._refresh()
        return sum(self.step(state) for state in list(self.versions.values()))

    def close(self) -> None:
        self.producer.flush(10)
        for state in self.versions.values():
            state.catalog.close()

    def step(self, state: VersionIds, max_records: int = 500) -> int:
        """Assign and publish IDs for the next fetched items of ``state``'s version; the count published."""
        messages = state.catalog.fetch(timeout_s=0.2, max_records=max_records)
        items = []
        for record in messages:
            if record.value is None:
                continue
            try:
                items.append(decode(ItemFeatureUpdate, record.value, self.settings.max_message_bytes))
            except ContractError:  # the stream's own output: a bad one is its to dead-letter, not a reader's
                log.warning("unreadable item-features record skipped", extra={"offset": record.offset})
        published = self._publish(state, self._assign(state, state.unassigned(items)))
        state.catalog.apply({}, reached(messages))
        return published

    def _assign(self, state: VersionIds, items: list[ItemFeatureUpdate]) -> list[ItemSemanticId]:
        if not items:
            return []
        texts = [build_item_text(item.title, item.description, item.brand, item.categories) for item in items]
        embeddings = state.encoder.encode(texts)
        assigned = []
        for item, embedding in zip(items, embeddings, strict=True):
            try:
                codes = state.table.assign_new(NEW + item.item_id, np.asarray(embedding))
            except ValueError as error:  # a full code prefix: the item waits for a retrained version
                log.warning("no semantic ID for item", extra={"item_id": item.item_id, "error": str(error)})
                continue
            assigned.append(
                ItemSemanticId(
                    model_version=state.version, item_id=item.item_id, codes=list(codes), assigned_at=utcnow()
                )
            )
        return assigned

    def _publish(self, state: VersionIds, assigned: list[ItemSemanticId]) -> int:
        for record in assigned:
            self.producer.produce(self.ids_topic, key=record.key.encode(), value=encode(record))
        if self.producer.flush(30) > 0:
            raise RuntimeError(f"item-ids of version {state.version} not delivered within 30 s")
        if assigned:
            log.info("semantic IDs published", extra={"version": state.version, "items": len(assigned)})
        return len(assigned)

    def _refresh(self) -> None:
        """Follow the versions to serve: load new ones (their assignments read back first), drop the rest."""
        self._checked_at = time.monotonic()
        wanted = {version_of(path): path for path in id_versions(self.settings)}
        for version in set(self.versions) - set(wanted):
            self.versions.pop(version).catalog.close()
        for version, path in wanted.items():
            if version in self.versions:
                continue
            try:
                self.versions[version] = self._load(version, path)
                self._failure = None
            except Exception as error:  # a broken or vanished version must not stop the others' IDs
                failure = f"{type(error).__name__}: {error}"
                if failure != self._failure:  # logged once, not at every check
                    self._failure = failure
                    log.warning("version not loaded; trying again", extra={"version": version, "error": failure})

    def _load(self, version: str, path: Path) -> VersionIds:
        """The version's table with every ID already published for it, and the catalog from its beginning."""
        artifact = ModelArtifact.load(path)
        restored = 0
        for value in read_topics(self.bootstrap, [self.ids_topic], READ_TIMEOUT_S)[self.ids_topic]:
            record = self._read_back(value)
            if record is None or record.model_version != version:
                continue
            try:
                artifact.ids.restore(NEW + record.item_id, tuple(record.codes))
                restored += 1
            except ValueError as error:  # a second ID for an item or a code: replicas keep the first, so do we
                log.warning("conflicting item ID skipped", extra={"key": record.key, "error": str(error)})
        folder = self.settings.state_dir / "item-ids" / self.settings.app_id / version
        log.warning("assigning semantic IDs", extra={"version": version, "restored": restored})
        return VersionIds(
            version=version,
            table=artifact.ids,
            trained=frozenset(artifact.item_ids),
            encoder=TextEncoder(artifact.encoder),
            catalog=Follower(folder, self.bootstrap, [self.features_topic], fresh=True),
        )

    def _read_back(self, value: bytes | None) -> ItemSemanticId | None:
        if value is None:
            return None
        try:
            return decode(ItemSemanticId, value, self.settings.max_message_bytes)
        except ContractError as error:
            log.warning("unreadable item-ids record skipped", extra={"error": error.detail[:200]})
            return None


def run_id_writer(settings: Settings, bootstrap: str) -> None:
    """Run the ID writer until SIGTERM or SIGINT."""
    torch.set_num_threads(1)
    serve_metrics(settings, "ids")
    run_until_signalled(IdWriter(settings, bootstrap).run)
