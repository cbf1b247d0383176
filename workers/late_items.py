"""Items a model version has not seen, for the interest worker's user reasoner: the knowledge chains and titles of
items published after training, followed from the compacted ``knowledge`` and ``item-features`` topics into a
local index, so that users' reasoning steps count what they interact with now and not only the training catalog."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from kafka_adapter.clients import Record
from kafka_adapter.follower import Follower, reached
from reaseq.contracts import ItemFeatureUpdate, KnowledgeChain, KnowledgeResult
from reaseq.settings import Settings
from reaseq.topics import ITEM_FEATURES, KNOWLEDGE, topic_name
from reaseq.wire import ContractError, decode

log = logging.getLogger(__name__)
_CHAIN, _TITLE = b"chain:", b"title:"


class LateItems:
    """Every item's latest knowledge chain and title, kept current by ``follow``."""

    def __init__(self, settings: Settings, bootstrap: str, path: Path) -> None:
        self.settings = settings
        self.knowledge_topic = topic_name(settings, KNOWLEDGE)
        self.follower = Follower(path, bootstrap, [self.knowledge_topic, topic_name(settings, ITEM_FEATURES)])

    async def follow(self, stop: asyncio.Event) -> None:
        """Read both topics from where the index stopped (the beginning for a new one), then keep up, until ``stop``."""
        while not stop.is_set():
            messages = self.follower.fetch(timeout_s=0, max_records=500)  # what the client has prefetched: no wait
            entries: dict[bytes, bytes | None] = {}
            for message in messages:
                entries.update(self._entries(message))
            self.follower.apply(entries, reached(messages))
            if not messages:
                await asyncio.sleep(0.2)

    def _entries(self, message: Record) -> dict[bytes, bytes | None]:
        value = message.value
        if value is None:
            return {}
        try:
            if message.topic == self.knowledge_topic:
                result = decode(KnowledgeResult, value, self.settings.max_message_bytes)
                return {_CHAIN + result.item_id.encode(): result.chain.model_dump_json().encode()}
            item = decode(ItemFeatureUpdate, value, self.settings.max_message_bytes)
            return {_TITLE + item.item_id.encode(): item.title.encode()}
        except ContractError as error:  # written by our own workers; a bad one is theirs to dead-letter, not ours
            log.warning(
                "unreadable state record skipped",
                extra={"topic": message.topic, "offset": message.offset, "error": error.detail[:200]},
            )
            return {}

    def chain(self, item_id: str) -> KnowledgeChain | None:
        raw = self.follower.get(_CHAIN + item_id.encode())
        return None if raw is None else KnowledgeChain.model_validate_json(raw)

    def title(self, item_id: str) -> str:
        raw = self.follower.get(_TITLE + item_id.encode())
        return item_id if raw is None else raw.decode()

    def close(self) -> None:
        self.follower.close()
