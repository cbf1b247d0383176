"""Feeding a running stack with a user's own data: JSON-lines items and events, or an LC-Rec / S3-Rec dataset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka_adapter.publish import PublishSummary, publish_file, publish_lines
from reaseq.contracts import CatalogItem, Interaction, InteractionKind
from reaseq.settings import Settings
from reaseq.wire import encode
from training.datasets import SequenceData, load_dataset

JSONL_FILES = {"items": "items.jsonl", "events": "events.jsonl"}
# Benchmark datasets carry order, not time: their interactions are spread one second apart from here.
DATASET_START = datetime(2026, 1, 1, tzinfo=UTC)


def dataset_records(data: SequenceData) -> tuple[list[CatalogItem], list[Interaction]]:
    """A dataset's catalog and its sequences as interactions (purchases), interleaved across users.

    The k-th interaction of every user comes before any user's (k+1)-th, so a stream of them looks like many
    users shopping at once rather than one user's whole life after another's.
    """
    catalog = data.catalog or {}
    items = [
        catalog.get(index) or CatalogItem(item_id=item_id, title=f"item {item_id}", event_time=DATASET_START)
        for index, item_id in enumerate(data.item_ids)
    ]
    longest = max((len(sequence) for sequence in data.sequences.values()), default=0)
    interactions: list[Interaction] = []
    for position in range(longest):
        for user, sequence in data.sequences.items():
            if position < len(sequence):
                interactions.append(
                    Interaction(
                        user_id=user,
                        item_id=data.item_ids[sequence[position]],
                        kind=InteractionKind.PURCHASE,
                        event_time=DATASET_START + timedelta(seconds=len(interactions)),
                    )
                )
    return items, interactions


def publish_dataset(settings: Settings, bootstrap: str, path: Path) -> dict[str, PublishSummary]:
    """Publish ``path``'s items, then its events; invalid JSON-lines records are dead-lettered and counted.

    ``path`` is a folder with ``items.jsonl`` and/or ``events.jsonl`` (the wire contracts, one a line), or
    anything ``training.datasets.load_dataset`` reads.
    """
    if path.is_dir() and any((path / name).exists() for name in JSONL_FILES.values()):
        return {
            kind: publish_file(settings, bootstrap, kind, path / name)
            for kind, name in JSONL_FILES.items()
            if (path / name).exists()
        }
    items, interactions = dataset_records(load_dataset(path))
    return {
        "items": publish_lines(settings, bootstrap, "items", (encode(item) for item in items), str(path)),
        "events": publish_lines(settings, bootstrap, "events", (encode(event) for event in interactions), str(path)),
    }
