"""Interaction sequences for offline training and evaluation, and the leave-one-out split.

Three sources give the same ``SequenceData``: the S3-Rec/TIGER text files (Beauty, Sports), the LC-Rec
JSON files (Scientific, with item text) and the project's own ``items``/``events`` topics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from kafka_adapter.reader import read_topics
from models.item_text import build_item_text, clean_text
from reaseq.contracts import CatalogItem, Interaction, KnowledgeChain, KnowledgeResult
from reaseq.settings import Settings
from reaseq.topics import EVENTS, ITEMS, KNOWLEDGE, topic_name
from reaseq.wire import decode_valid
from training.errors import DatasetError

DATASET_TIME = datetime(1970, 1, 1, tzinfo=UTC)  # dataset items carry no publication time


@dataclass(frozen=True)
class SequenceData:
    """Users' item sequences over a dense item index."""

    item_ids: list[str]  # index -> external item id
    sequences: dict[str, list[int]]  # user -> item indices, oldest first
    item_text: dict[int, str] | None  # index -> text; None when the source has no text at all
    name: str
    catalog: dict[int, CatalogItem] | None = None  # index -> item metadata, where the source has it
    knowledge: dict[int, KnowledgeChain] | None = None  # index -> published item knowledge (from the topics)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def item_categories(self) -> dict[int, list[str]]:
        return {index: item.categories for index, item in (self.catalog or {}).items()}

    @property
    def num_interactions(self) -> int:
        return sum(len(items) for items in self.sequences.values())


def load_s3rec(path: Path, name: str | None = None, item_path: Path | None = None) -> SequenceData:
    """An S3-Rec file (``user_id item_id ...`` per line, 1-based ids, time order), with item metadata when given.

    Item index = id - 1, the keying of the published ``*.rqvae-index.json``; ``item_ids[i] == str(i + 1)``. The
    metadata (an LC-Rec ``*.item.json``) is keyed by that 0-based index too.
    """
    sequences: dict[str, list[int]] = {}
    largest = 0
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        ids = [int(field) for field in fields[1:]]
        if any(item_id < 1 for item_id in ids):
            raise DatasetError(f"{path}: item ids are 1-based, got {min(ids)} for user {fields[0]}")
        if ids:
            sequences[fields[0]] = [item_id - 1 for item_id in ids]
            largest = max(largest, *ids)
    catalog, item_text = _item_metadata(item_path, _json(item_path), largest) if item_path else (None, None)
    return SequenceData([str(i + 1) for i in range(largest)], sequences, item_text, name or path.stem, catalog)


def load_lcrec(inter_path: Path, item_path: Path | None = None, name: str | None = None) -> SequenceData:
    """LC-Rec files: ``{user: [item_idx, ...]}`` (0-based, time order) and optional item metadata.

    Metadata categories are one comma-separated string. Items without metadata have no ``item_text`` entry.
    """
    raw_sequences: dict[str, list[int]] = _json(inter_path)
    sequences = {user: [int(i) for i in items] for user, items in raw_sequences.items() if items}
    indices = [i for items in sequences.values() for i in items]
    if indices and min(indices) < 0:
        raise DatasetError(f"{inter_path}: item indices are 0-based, got {min(indices)}")
    metadata = _json(item_path) if item_path else {}
    keys = [int(key) for key in metadata if str(key).lstrip("-").isdigit()]  # others: _item_metadata names them
    count = max(indices + keys, default=-1) + 1
    catalog, item_text = _item_metadata(item_path, metadata, count) if item_path else (None, None)
    stem = inter_path.name.removesuffix(".inter.json")
    return SequenceData([str(i) for i in range(count)], sequences, item_text, name or stem, catalog)


def _json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None


def _item_metadata(item_path: Path, metadata: Any, count: int) -> tuple[dict[int, CatalogItem], dict[int, str]]:
    """An LC-Rec ``*.item.json`` (``{index: {title, description, brand, categories}}``, 0-based) as catalog items
    and item texts of ``count`` items."""
    try:
        indices = {int(key): meta for key, meta in metadata.items()}
    except (AttributeError, ValueError):
        raise DatasetError(f"{item_path}: expected an object keyed by 0-based item index") from None
    outside = [index for index in indices if not 0 <= index < count]
    if outside:
        raise DatasetError(
            f"{item_path}: keys are 0-based item indices (an S3-Rec id minus one) below {count}, got {min(outside, key=abs)}"
        )
    catalog = {index: _catalog_item(index, meta) for index, meta in indices.items()}
    item_text = {
        index: build_item_text(
            meta.get("title") or "",
            meta.get("description") or "",
            meta.get("brand"),
            (meta.get("categories") or "").split(","),
        )
        for index, meta in indices.items()
    }
    return catalog, item_text


def _catalog_item(index: int, meta: Mapping[str, str | None]) -> CatalogItem:
    """Dataset metadata as a catalog item, cut to the contract's limits, for the reasoners that read items."""
    categories = [
        name[:200] for name in (clean_text(part) for part in (meta.get("categories") or "").split(",")) if name
    ]
    return CatalogItem(
        item_id=str(index),
        title=clean_text(meta.get("title") or "")[:1000] or f"item {index}",
        description=clean_text(meta.get("description") or "")[:20000],
        brand=clean_text(meta.get("brand") or "")[:200] or None,
        categories=categories,
        event_time=DATASET_TIME,
    )


def load_dataset(path: Path) -> SequenceData:
    """Load a folder (``*.inter.json`` [+ ``*.item.json``], or one S3-Rec ``*.txt`` [+ one ``*.item.json``]) or one
    such file; a DatasetError names the file and what was expected."""
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset folder or file")
    if path.is_dir():
        inters = sorted(path.glob("*.inter.json"))
        texts = sorted(path.glob("*.txt"))
        candidates = inters or texts
        if len(candidates) != 1:
            found = [p.name for p in inters + texts]
            raise DatasetError(f"{path}: expected one *.inter.json or one *.txt sequence file, found {found}")
        path = candidates[0]
    if path.name.endswith(".inter.json"):
        item_path = path.with_name(path.name.removesuffix(".inter.json") + ".item.json")
        return load_lcrec(path, item_path if item_path.exists() else None)
    if path.suffix == ".txt":
        metadata = sorted(path.parent.glob("*.item.json"))
        if len(metadata) > 1:
            raise DatasetError(
                f"{path.parent}: expected at most one *.item.json beside {path.name}, found {[p.name for p in metadata]}"
            )
        return load_s3rec(path, item_path=metadata[0] if metadata else None)
    raise DatasetError(f"{path}: not a known sequence format (*.inter.json or S3-Rec *.txt)")


def load_from_topics(settings: Settings, bootstrap: str, timeout_s: float = 30.0) -> SequenceData:
    """Sequences from the ``items`` and ``events`` topics, read from the beginning.

    Records that fail their contract are skipped (the stream dead-letters them). Interactions of every
    kind count, deduplicated by ``event_id`` (first seen wins) and ordered by event time per user.
    Items are those in either topic, indexed in sorted id order; text comes from an item's latest
    version (same rule as the catalog agent: a version with an older event time does not replace it);
    items only seen in events have no ``item_text`` entry. Item knowledge comes from the ``knowledge`` topic,
    for items whose knowledge is of their latest version.
    """
    items_topic, events_topic, knowledge_topic = (topic_name(settings, spec) for spec in (ITEMS, EVENTS, KNOWLEDGE))
    raw = read_topics(bootstrap, [items_topic, events_topic, knowledge_topic], timeout_s)
    chains = {
        result.item_id: result
        for result in decode_valid(KnowledgeResult, raw[knowledge_topic], settings.max_message_bytes)
    }
    latest: dict[str, CatalogItem] = {}
    for item in decode_valid(CatalogItem, raw[items_topic], settings.max_message_bytes):
        current = latest.get(item.item_id)
        if current is None or item.event_time >= current.event_time:
            latest[item.item_id] = item
    seen: set[str] = set()
    by_user: dict[str, list[tuple[datetime, str]]] = {}
    for event in decode_valid(Interaction, raw[events_topic], settings.max_message_bytes):
        assert event.event_id is not None  # derived by the contract when the producer sent none
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        by_user.setdefault(event.user_id, []).append((event.event_time, event.item_id))
    item_ids = sorted(set(latest) | {item_id for events in by_user.values() for _, item_id in events})
    index = {item_id: i for i, item_id in enumerate(item_ids)}
    # A user's events share a partition, so the stable sort keeps offset order among equal event times.
    sequences = {
        user: [index[item_id] for _, item_id in sorted(by_user[user], key=lambda event: event[0])]
        for user in sorted(by_user)
    }
    item_text = {
        index[item_id]: build_item_text(item.title, item.description, item.brand, item.categories)
        for item_id, item in latest.items()
    }
    catalog = {index[item_id]: item for item_id, item in latest.items()}
    knowledge = {
        index[item_id]: result.chain
        for item_id, result in chains.items()
        if item_id in latest
        and result.content_hash == latest[item_id].content_hash()  # knowledge of the current version
    }
    return SequenceData(item_ids, sequences, item_text, settings.topic_prefix.rstrip("."), catalog, knowledge)


@dataclass(frozen=True)
class Examples:
    """Next-item examples: for each, the user, the preceding items (oldest first) and the target."""

    users: list[str]
    histories: list[list[int]]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class Split:
    train: Examples
    valid: Examples
    test: Examples
    num_items: int


def leave_one_out(data: SequenceData, max_history: int = 20) -> Split:
    """The TIGER/S3-Rec protocol: per user, the last item is the test target, the second last the validation target.

    Users with fewer than 3 interactions are dropped (they cannot give a training item, a validation and a
    test target). Training examples are every prefix of the remaining items with at least one item of
    history. Histories keep the ``max_history`` most recent items before the target; the test history
    includes the validation item.
    """
    if max_history < 1:
        raise ValueError("max_history must be at least 1")
    train, valid, test = Examples([], [], []), Examples([], [], []), Examples([], [], [])
    for user, sequence in data.sequences.items():
        if len(sequence) < 3:
            continue
        for target_at in range(1, len(sequence)):
            part = test if target_at == len(sequence) - 1 else valid if target_at == len(sequence) - 2 else train
            part.users.append(user)
            part.histories.append(sequence[max(0, target_at - max_history) : target_at])
            part.targets.append(sequence[target_at])
    return Split(train, valid, test, data.num_items)
