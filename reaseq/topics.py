"""The topic catalog: every topic the system uses, with its key, policy and partitioning.

Provisioning (``kafka_adapter.provision``), the Faust app and the CLI all read this one list, so a topic's
configuration is written once. All keyed topics share ``Settings.partitions`` so that streams and
tables keyed the same way are co-partitioned.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from reaseq.settings import Settings


class Role(str, Enum):
    SOURCE = "source"  # written by catalog teams and front-ends; the source of truth
    INTERNAL = "internal"  # repartition hops between agents
    STATE = "state"  # compacted, latest value per key: what serving and workers follow
    REQUEST = "request"  # work handed to asynchronous workers
    DEAD_LETTER = "dead-letter"
    CHANGELOG = "changelog"  # Faust table changelogs, one set per state generation


@dataclass(frozen=True)
class TopicSpec:
    name: str
    role: Role
    key: str
    doc: str
    partitions: int | None = None  # None: Settings.partitions

    @property
    def compacted(self) -> bool:
        return self.role in (Role.STATE, Role.CHANGELOG)


ITEMS = TopicSpec("items", Role.SOURCE, "item_id", "Catalog items as published (CatalogItem).")
EVENTS = TopicSpec("events", Role.SOURCE, "user_id", "User interactions as published (Interaction).")
BY_ITEM = TopicSpec("by-item", Role.INTERNAL, "item_id", "Valid items and interactions, partitioned by item (ByItem).")
BY_USER = TopicSpec("by-user", Role.INTERNAL, "user_id", "Interactions whose item is known (ByUser).")
ITEM_FEATURES = TopicSpec("item-features", Role.STATE, "item_id", "Base item features (ItemFeatureUpdate).")
USER_FEATURES = TopicSpec("user-features", Role.STATE, "user_id", "User histories (UserFeatureUpdate).")
# One partition: one writer appends, and every replica reads the assignments in the one order they were made.
ITEM_IDS = TopicSpec(
    "item-ids",
    Role.STATE,
    "model_version/item_id",
    "Semantic IDs of items published after a version was trained (ItemSemanticId).",
    partitions=1,
)
KNOWLEDGE = TopicSpec("knowledge", Role.STATE, "item_id", "LLM item knowledge (KnowledgeResult).")
INTERESTS = TopicSpec("interests", Role.STATE, "user_id", "Inferred beyond-log interests (InterestResult).")
USER_REASONING = TopicSpec(
    "user-reasoning", Role.STATE, "user_id", "Mined reasoning pattern filled per user (UserReasoning)."
)
CONTROL = TopicSpec("control", Role.STATE, "name", "Operator state, e.g. the serving state generation.", partitions=1)
ENRICHMENT_REQUESTS = TopicSpec("enrichment-requests", Role.REQUEST, "item_id", "EnrichmentRequest.")
INTEREST_REQUESTS = TopicSpec("interest-requests", Role.REQUEST, "user_id", "InterestRequest, debounced per user.")
DEAD_LETTERS = TopicSpec(
    "dead-letters", Role.DEAD_LETTER, "source key", "Rejected records, original bytes + reason headers."
)

CATALOG: tuple[TopicSpec, ...] = (
    ITEMS,
    EVENTS,
    BY_ITEM,
    BY_USER,
    ITEM_FEATURES,
    ITEM_IDS,
    USER_FEATURES,
    KNOWLEDGE,
    INTERESTS,
    USER_REASONING,
    CONTROL,
    ENRICHMENT_REQUESTS,
    INTEREST_REQUESTS,
    DEAD_LETTERS,
)

# Faust tables of the stream app; their changelogs are provisioned per state generation.
TABLES: tuple[str, ...] = ("items", "pending", "histories", "interest-due")

# Topics that a state generation owns: a replay rebuilds them beside the live generation.
GENERATION_SCOPED: tuple[TopicSpec, ...] = (BY_ITEM, BY_USER)


def topic_name(settings: Settings, spec: TopicSpec, generation: int | None = None) -> str:
    """Full topic name; generation-scoped topics carry their generation."""
    if spec in GENERATION_SCOPED:
        if generation is None:
            raise ValueError(f"{spec.name} is generation-scoped: pass a generation")
        return settings.topic(f"{spec.name}.g{generation}")
    return settings.topic(spec.name)


def changelog_name(settings: Settings, table: str, generation: int) -> str:
    """The changelog topic Faust uses for a table of one generation."""
    return f"{settings.app_name(generation)}-{table}-changelog"


def partitions_of(settings: Settings, spec: TopicSpec) -> int:
    return spec.partitions or settings.partitions


def topic_config(settings: Settings, spec: TopicSpec) -> dict[str, str]:
    """Broker-side configuration of a topic, by its role."""
    if spec.compacted:
        return {"cleanup.policy": "compact"}
    if spec.role is Role.DEAD_LETTER:
        return {"cleanup.policy": "delete", "retention.ms": str(settings.dead_letter_retention_ms)}
    return {"cleanup.policy": "delete", "retention.ms": str(settings.source_retention_ms)}
