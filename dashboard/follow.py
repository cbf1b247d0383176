"""What the page shows of items and users, followed from the compacted topics into bounded local state.

A thread reads ``item-features``, ``knowledge``, ``user-features``, ``interests`` and ``user-reasoning`` from their
beginning, without a consumer group. Titles and per-user data go to a RocksDB folder under
``<state_dir>/dashboard/`` (it grows with the catalog and the users, not with memory); the newest knowledge results
stay in a bounded in-memory map. The folder is a cache emptied at every start: the embedded broker keeps topics in
memory only, so nothing from an earlier broker may survive into the page.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from kafka_adapter.clients import Record
from kafka_adapter.follower import Entries, Follower, reached
from reaseq.contracts import InterestResult, ItemFeatureUpdate, KnowledgeResult, UserFeatureUpdate, UserReasoning
from reaseq.settings import Settings
from reaseq.topics import INTERESTS, ITEM_FEATURES, KNOWLEDGE, USER_FEATURES, USER_REASONING, topic_name
from reaseq.wire import ContractError, M, decode

log = logging.getLogger(__name__)

View = dict[str, Any]
# Key prefixes in the one RocksDB folder: item titles and the three per-user records.
TITLE, HISTORY, INTEREST, REASONING = b"title:", b"history:", b"interests:", b"reasoning:"


def knowledge_view(result: KnowledgeResult) -> View:
    """A knowledge result as the page shows it: its steps in order, each with its fields and rationale (no vectors)."""
    return {
        "item_id": result.item_id,
        "content_hash": result.content_hash,
        "steps": [
            {"name": name, "rationale": step.rationale, "fields": step.model_dump(mode="json", exclude={"rationale"})}
            for name, step in result.chain.steps()
        ],
        "critique": result.critique,
        "backend": result.backend,
        "model": result.model,
        "prompt_version": result.prompt_version,
        "created_at": result.created_at.isoformat(),
    }


class TopicFollower:
    """Follows the state topics in a background thread; ``recent_items`` and ``user`` read what it has seen."""

    def __init__(self, settings: Settings, bootstrap: str, recent_limit: int = 100) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.recent_limit = recent_limit
        self._recent: OrderedDict[str, View] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-follower", daemon=True)
        self._handlers: dict[str, Callable[[bytes], Entries]] = {
            topic_name(settings, ITEM_FEATURES): self._on_item,
            topic_name(settings, KNOWLEDGE): self._on_knowledge,
            topic_name(settings, USER_FEATURES): self._on_history,
            topic_name(settings, INTERESTS): self._on_interests,
            topic_name(settings, USER_REASONING): self._on_reasoning,
        }
        self.follower = Follower(settings.state_dir / "dashboard", bootstrap, list(self._handlers), fresh=True)
        self.records = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.follower.close()

    def title(self, item_id: str) -> str | None:
        raw = self.follower.get(TITLE + item_id.encode())
        return None if raw is None else raw.decode()

    def recent_items(self, limit: int) -> list[View]:
        """The newest knowledge results, newest first, each with its item's title."""
        with self._lock:
            views = list(self._recent.values())
        views.sort(key=lambda view: view["created_at"], reverse=True)
        return [{**view, "title": self.title(view["item_id"])} for view in views[:limit]]

    def user(self, user_id: str) -> View:
        """A user's history (newest first), inferred interests and reasoning steps; items carry their titles."""

        def stored(prefix: bytes) -> View | None:
            raw = self.follower.get(prefix + user_id.encode())
            return None if raw is None else orjson.loads(raw)

        history, interests = stored(HISTORY), stored(INTEREST)
        for entry in (history or {}).get("entries", []) + (interests or {}).get("items", []):
            entry["title"] = self.title(entry["item_id"])
        return {"user_id": user_id, "history": history, "interests": interests, "reasoning": stored(REASONING)}

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                messages = self.follower.fetch(timeout_s=0.5, max_records=500)
                entries: dict[bytes, bytes | None] = {}
                for message in messages:
                    entries.update(self._handle(message))
                self.follower.apply(entries, reached(messages))
        except Exception:  # the page keeps serving what it has; the log says why it stopped following
            log.exception("dashboard follower stopped")

    def _handle(self, message: Record) -> Entries:
        value = message.value
        if value is None:
            return {}
        try:
            entries = self._handlers[message.topic](value)
        except ContractError as error:  # what the stream dead-letters is not the page's to show
            log.debug("undecodable record skipped", extra={"topic": message.topic, "reason": error.reason.value})
            return {}
        self.records += 1
        return entries

    def _decode(self, model: type[M], raw: bytes) -> M:
        return decode(model, raw, self.settings.max_message_bytes)

    def _on_item(self, raw: bytes) -> Entries:
        item = self._decode(ItemFeatureUpdate, raw)
        return {TITLE + item.item_id.encode(): item.title.encode()}

    def _on_knowledge(self, raw: bytes) -> Entries:
        result = self._decode(KnowledgeResult, raw)
        with self._lock:
            self._recent.pop(result.item_id, None)
            self._recent[result.item_id] = knowledge_view(result)
            while len(self._recent) > self.recent_limit:
                self._recent.popitem(last=False)
        return {}

    def _on_history(self, raw: bytes) -> Entries:
        update = self._decode(UserFeatureUpdate, raw)
        entries = [entry.model_dump(mode="json") for entry in reversed(update.history)]
        view = {"version": update.version, "as_of": update.as_of.isoformat(), "entries": entries}
        return {HISTORY + update.user_id.encode(): orjson.dumps(view)}

    def _on_interests(self, raw: bytes) -> Entries:
        result = self._decode(InterestResult, raw)
        view = result.model_dump(mode="json", include={"history_version", "model_version", "created_at"})
        return {
            INTEREST + result.user_id.encode(): orjson.dumps(
                {**view, "items": [item.model_dump() for item in result.interests]}
            )
        }

    def _on_reasoning(self, raw: bytes) -> Entries:
        reasoning = self._decode(UserReasoning, raw)
        view = reasoning.model_dump(mode="json", exclude={"schema_version", "user_id", "step_vectors"})
        return {REASONING + reasoning.user_id.encode(): orjson.dumps(view)}
