"""Items a model version has not seen, for the interest worker's user reasoner: the knowledge chains and titles of
items published after training, followed from the compacted ``knowledge`` and ``item-features`` topics into a
local index, so that users' reasoning steps count what they interact with now and not only the training catalog."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from reaseq.contracts import ItemFeatureUpdate, KnowledgeChain, KnowledgeResult
from reaseq.settings import Settings
from reaseq.topics import ITEM_FEATURES, KNOWLEDGE, topic_name
from reaseq.wire import ContractError, decode
from workers.batch_worker import LocalIndex

log = logging.getLogger(__name__)
_CHAIN, _TITLE = "chain:", "title:"


class LateItems:
    """Every item's latest knowledge chain and title, kept current by ``follow``."""

    def __init__(self, settings: Settings, bootstrap: str, path: Path) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.index = LocalIndex(path)
        self.knowledge_topic = topic_name(settings, KNOWLEDGE)
        self.features_topic = topic_name(settings, ITEM_FEATURES)

    async def follow(self, stop: asyncio.Event) -> None:
        """Read both topics from their beginning, then keep up, until ``stop``."""
        # No consumer group: every worker replica needs every item, and a compacted topic re-read is cheap.
        consumer = AIOKafkaConsumer(
            self.knowledge_topic, self.features_topic, bootstrap_servers=self.bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            while not stop.is_set():
                for records in (await consumer.getmany(timeout_ms=500, max_records=500)).values():
                    for record in records:
                        self._fold(record)
        finally:
            await consumer.stop()

    def _fold(self, record: ConsumerRecord) -> None:
        if record.value is None:
            return
        try:
            if record.topic == self.knowledge_topic:
                result = decode(KnowledgeResult, record.value, self.settings.max_message_bytes)
                self.index.put(_CHAIN + result.item_id, result.chain.model_dump_json().encode())
            else:
                item = decode(ItemFeatureUpdate, record.value, self.settings.max_message_bytes)
                self.index.put(_TITLE + item.item_id, item.title.encode())
        except ContractError as error:  # written by our own workers; a bad one is theirs to dead-letter, not ours
            log.warning("unreadable state record skipped", extra={"topic": record.topic, "offset": record.offset, "error": error.detail[:200]})

    def chain(self, item_id: str) -> KnowledgeChain | None:
        raw = self.index.get(_CHAIN + item_id)
        return None if raw is None else KnowledgeChain.model_validate_json(raw)

    def title(self, item_id: str) -> str:
        raw = self.index.get(_TITLE + item_id)
        return item_id if raw is None else raw.decode()

    def close(self) -> None:
        self.index.close()
