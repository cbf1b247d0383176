"""Values kept in the stream app's RocksDB tables (internal, not on any public topic)."""

from __future__ import annotations

import bisect

from pydantic import BaseModel, ConfigDict, Field

from reaseq.contracts import HistoryEntry, Interaction, ItemFeatureUpdate


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemState(_State):
    """The items table: the latest accepted base features of an item."""

    features: ItemFeatureUpdate


class PendingInteractions(_State):
    """The pending table: interactions that arrived before their item; replayed when it arrives."""

    interactions: list[Interaction] = Field(default_factory=list)

    def add(self, interaction: Interaction) -> bool:
        """Keep an interaction once; False if this event id is already waiting."""
        if any(p.event_id == interaction.event_id for p in self.interactions):
            return False
        self.interactions.append(interaction)
        return True


class UserState(_State):
    """The histories table: a user's recent interactions and the ids of recent events seen."""

    version: int = 0
    history: list[HistoryEntry] = Field(default_factory=list)
    seen: list[str] = Field(default_factory=list)

    def apply(self, interaction: Interaction, history_length: int, dedup_window: int) -> bool:
        """Add an interaction in event-time order; False (and no change) if it was applied before."""
        assert interaction.event_id is not None
        if interaction.event_id in self.seen:
            return False
        entry = HistoryEntry(item_id=interaction.item_id, kind=interaction.kind, event_time=interaction.event_time)
        # Late-resolved interactions are older than what is already kept: insert, not append.
        position = bisect.bisect_right([e.event_time for e in self.history], entry.event_time)
        self.history.insert(position, entry)
        del self.history[:-history_length]
        self.seen.append(interaction.event_id)
        del self.seen[:-dedup_window]
        self.version += 1
        return True
