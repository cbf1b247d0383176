"""Catalog agent: item upserts and the item join of interactions, one ordered stream per item.

Items and interactions for one item arrive on the same partition of the by-item topic, so an
interaction that comes before its item is parked in the pending table and released, in order,
the moment the item is accepted.
"""

from __future__ import annotations

from reaseq.contracts import (
    ByItem,
    ByUser,
    CatalogItem,
    DeadLetterReason,
    EnrichmentRequest,
    Interaction,
    ItemFeatureUpdate,
    utcnow,
)
from reaseq.metrics import QUEUE_DEPTH
from reaseq.wire import ContractError, decode, encode
from streams.app import StreamApp
from streams.deadletter import guarded
from streams.state import ItemState, PendingInteractions

PENDING_SAMPLE_S = 2.0  # a full scan of this worker's pending partitions: cheap while items arrive on time


def register(sa: StreamApp) -> None:
    items, pending = sa.tables.items, sa.tables.pending
    topics = sa.topics
    limit = sa.settings.max_message_bytes

    async def forward(interaction: Interaction) -> None:
        await topics.by_user.send(key=interaction.user_id.encode(), value=encode(ByUser(interaction=interaction)))

    async def upsert(item: CatalogItem) -> None:
        raw_previous = items.get(item.item_id)
        previous = ItemState.model_validate_json(raw_previous).features if raw_previous else None
        content_hash = item.content_hash()
        if previous is not None and (previous.content_hash == content_hash or item.event_time < previous.event_time):
            return  # unchanged, or an older version arriving late: the current state stands
        features = ItemFeatureUpdate(
            item_id=item.item_id,
            content_hash=content_hash,
            title=item.title,
            description=item.description,
            brand=item.brand,
            categories=item.categories,
            price=item.price,
            event_time=item.event_time,
            first_seen=previous.first_seen if previous else item.event_time,
        )
        key = item.item_id.encode()
        # Outputs before state: a crash in between re-runs the record, never skips its outputs.
        await topics.item_features.send(key=key, value=encode(features))
        await topics.enrichment_requests.send(
            key=key,
            value=encode(
                EnrichmentRequest(item_id=item.item_id, content_hash=content_hash, item=item, requested_at=utcnow())
            ),
        )
        waiting = pending.get(item.item_id)
        if waiting is not None:
            for interaction in PendingInteractions.model_validate_json(waiting).interactions:
                await forward(interaction)
        items[item.item_id] = ItemState(features=features).model_dump_json().encode()
        if waiting is not None:
            del pending[item.item_id]

    async def join(interaction: Interaction) -> None:
        if items.get(interaction.item_id) is not None:
            await forward(interaction)
            return
        raw = pending.get(interaction.item_id)
        waiting = PendingInteractions.model_validate_json(raw) if raw else PendingInteractions()
        if not waiting.add(interaction):
            return  # redelivered and already waiting: checked before the limit, so never dead-lettered as well
        if len(waiting.interactions) > sa.settings.pending_limit:
            raise ContractError(
                DeadLetterReason.PENDING_OVERFLOW,
                f"{sa.settings.pending_limit} interactions already wait for unknown item {interaction.item_id!r}",
            )
        pending[interaction.item_id] = waiting.model_dump_json().encode()

    async def handle(raw: bytes | None) -> None:
        record = decode(ByItem, raw, limit)
        if record.item is not None:
            await upsert(record.item)
        elif record.interaction is not None:
            await join(record.interaction)

    @sa.app.agent(topics.by_item, name="catalog")
    async def catalog(stream):
        async for event in stream.events():
            await guarded(sa, event, "catalog", handle)

    @sa.app.timer(interval=PENDING_SAMPLE_S)
    async def sample_pending() -> None:
        waiting = sum(len(PendingInteractions.model_validate_json(raw).interactions) for raw in pending.values())
        QUEUE_DEPTH.labels("pending").set(waiting)
