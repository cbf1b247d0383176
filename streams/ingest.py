"""Ingest agents: validate source records and route them, keyed by item, to the catalog agent."""

from __future__ import annotations

from reaseq.contracts import ByItem, CatalogItem, Interaction
from reaseq.wire import decode, encode
from streams.app import StreamApp
from streams.deadletter import guarded


def register(sa: StreamApp) -> None:
    limit = sa.settings.max_message_bytes
    by_item = sa.topics.by_item

    async def route_item(raw: bytes | None) -> None:
        item = decode(CatalogItem, raw, limit)
        await by_item.send(key=item.item_id.encode(), value=encode(ByItem(item=item)))

    async def route_interaction(raw: bytes | None) -> None:
        interaction = decode(Interaction, raw, limit)
        await by_item.send(key=interaction.item_id.encode(), value=encode(ByItem(interaction=interaction)))

    @sa.app.agent(sa.topics.items, name="ingest-items")
    async def ingest_items(stream):
        async for event in stream.events():
            await guarded(sa, event, "ingest-items", route_item)

    @sa.app.agent(sa.topics.events, name="ingest-events")
    async def ingest_events(stream):
        async for event in stream.events():
            await guarded(sa, event, "ingest-events", route_interaction)
