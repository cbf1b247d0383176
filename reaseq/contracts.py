"""Every message that crosses a topic, defined once.

The wire format is one JSON object per record with a ``schema_version`` field; ``reaseq.wire``
encodes and decodes it. Models are strict (unknown fields and wrong types are errors) so that a bad
producer is caught at the edge and dead-lettered, not half-understood downstream.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

SCHEMA_VERSION: Literal[1] = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({SCHEMA_VERSION})

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
AttributeValue = str | int | float | bool | list[str]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Contract(BaseModel):
    """Base of every wire model: strict, immutable, versioned."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    schema_version: Literal[1] = SCHEMA_VERSION


class CatalogItem(Contract):
    """A product as a catalog team publishes it on the items topic (key: item_id)."""

    item_id: Id
    title: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    description: Annotated[str, StringConstraints(max_length=20000)] = ""
    brand: Annotated[str, StringConstraints(max_length=200)] | None = None
    categories: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(default_factory=list)
    price: Annotated[float, Field(ge=0)] | None = None
    attributes: dict[str, AttributeValue] = Field(default_factory=dict)
    event_time: AwareDatetime

    def content_hash(self) -> str:
        """Hash of everything but the event time: an unchanged item re-published hashes the same."""
        body = self.model_dump(mode="json", exclude={"event_time"})
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


class InteractionKind(str, Enum):
    VIEW = "view"
    CLICK = "click"
    CART = "cart"
    PURCHASE = "purchase"


class Interaction(Contract):
    """A user's interaction with an item, on the events topic (key: user_id)."""

    event_id: Id | None = None
    user_id: Id
    item_id: Id
    kind: InteractionKind
    event_time: AwareDatetime

    @model_validator(mode="after")
    def _derive_event_id(self) -> Interaction:
        # Producers that send no id get a deterministic one, so redelivery and replay dedupe alike.
        if self.event_id is None:
            key = f"{self.user_id}\x1f{self.item_id}\x1f{self.kind.value}\x1f{self.event_time.isoformat()}"
            object.__setattr__(self, "event_id", hashlib.sha256(key.encode()).hexdigest()[:24])
        return self


class HistoryEntry(BaseModel):
    """One interaction as kept in a user's history."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: str
    kind: InteractionKind
    event_time: AwareDatetime


class ItemFeatureUpdate(Contract):
    """Latest base features of an item (compacted item-features topic, key: item_id)."""

    item_id: Id
    content_hash: str
    title: str
    description: str = ""
    brand: str | None
    categories: list[str]
    price: float | None
    event_time: AwareDatetime
    first_seen: AwareDatetime  # event time of the item's first accepted version: outputs replay identically


class ItemSemanticId(Contract):
    """The semantic ID one model version gives an item published after it was trained (compacted item-ids topic,
    key: ``<model_version>/<item_id>``). One writer assigns them, so every serving replica of the version agrees."""

    model_version: Id
    item_id: Id
    codes: list[int] = Field(min_length=1)
    assigned_at: AwareDatetime

    @property
    def key(self) -> str:
        return f"{self.model_version}/{self.item_id}"


class UserFeatureUpdate(Contract):
    """Latest recent history of a user (compacted user-features topic, key: user_id).

    ``version`` counts the interactions applied so far; it only grows, so a consumer keeps the highest.
    """

    user_id: Id
    version: int = Field(ge=0)
    history: list[HistoryEntry]
    as_of: AwareDatetime  # event time of the newest interaction: outputs replay identically


class EnrichmentRequest(Contract):
    """Ask the LLM agents to reason about an item (key: item_id); deduplicated by content hash."""

    item_id: Id
    content_hash: str
    item: CatalogItem
    requested_at: AwareDatetime


KNOWLEDGE_SCHEMA: Literal["knowledge-v1"] = (
    "knowledge-v1"  # the version of the reasoning chain below; bump it with any change to the steps
)

LABEL_MAX = 60
Label = Annotated[str, StringConstraints(min_length=1, max_length=LABEL_MAX, strip_whitespace=True)]
Rationale = Annotated[str, StringConstraints(min_length=1, max_length=400, strip_whitespace=True)]


class Season(str, Enum):
    SPRING = "spring"
    SUMMER = "summer"
    AUTUMN = "autumn"
    WINTER = "winter"
    ALL_YEAR = "all-year"


class ReasoningStep(BaseModel):
    """One step of an item's reasoning chain: structured fields and a short rationale for them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rationale: Rationale


class AttributesStep(ReasoningStep):
    """What the product is made of and what distinguishes it."""

    attributes: Annotated[list[Label], Field(min_length=1, max_length=8)]
    materials: Annotated[list[Label], Field(max_length=5)]


class UsageStep(ReasoningStep):
    """Where, when and for what the product is used."""

    scenarios: Annotated[list[Label], Field(min_length=1, max_length=5)]
    seasons: Annotated[list[Season], Field(min_length=1, max_length=4)]


class AudienceStep(ReasoningStep):
    """Who buys it."""

    audiences: Annotated[list[Label], Field(min_length=1, max_length=4)]


class NeedsStep(ReasoningStep):
    """What a buyer also needs, and what could replace it."""

    complements: Annotated[list[Label], Field(max_length=5)]
    substitutes: Annotated[list[Label], Field(max_length=5)]


class SummaryStep(ReasoningStep):
    """The consolidated, verified description of the item."""

    summary: Annotated[str, StringConstraints(min_length=1, max_length=300, strip_whitespace=True)]


class KnowledgeChain(BaseModel):
    """An item's reasoning chain; the field order is the step order (the ranker keeps it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attributes: AttributesStep
    usage: UsageStep
    audience: AudienceStep
    needs: NeedsStep
    summary: SummaryStep

    @classmethod
    def step_names(cls) -> list[str]:
        return list(cls.model_fields)

    def steps(self) -> list[tuple[str, ReasoningStep]]:
        return [(name, getattr(self, name)) for name in self.step_names()]


class StepProblem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step: Literal["attributes", "usage", "audience", "needs"]
    problem: Annotated[str, StringConstraints(min_length=1, max_length=300)]


class Critique(BaseModel):
    """The critic agent's review of the specialists' steps (an LLM output, validated like the steps)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    consistent: bool
    problems: Annotated[list[StepProblem], Field(max_length=4)]


class KnowledgeResult(Contract):
    """An item's distilled knowledge (compacted knowledge topic, key: item_id).

    ``step_vectors`` holds one sentence embedding per step, in step order; ``fused_vector`` is their normalised
    mean with the item text's own embedding, the knowledge-enriched item representation.
    """

    item_id: Id
    content_hash: str
    knowledge_schema: Literal["knowledge-v1"] = KNOWLEDGE_SCHEMA
    chain: KnowledgeChain
    critique: list[str] = Field(default_factory=list)  # inconsistencies the critic found and the agents revised
    step_vectors: list[list[float]]
    fused_vector: list[float]
    encoder: str
    backend: str  # "vllm" or "embedded"
    model: str
    prompt_version: str
    created_at: AwareDatetime


class InterestRequest(Contract):
    """Ask the diffusion model for a user's beyond-log interests (key: user_id)."""

    user_id: Id
    history_version: int = Field(ge=0)
    item_ids: list[str]
    requested_at: AwareDatetime


class InferredItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: str
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]


class InterestResult(Contract):
    """A user's inferred beyond-log interests (compacted interests topic, key: user_id)."""

    user_id: Id
    history_version: int = Field(ge=0)
    interests: list[InferredItem]
    model_version: str
    created_at: AwareDatetime


class UserReasoning(Contract):
    """A user's reasoning steps, the mined pattern filled for the current history (compacted user-reasoning topic)."""

    user_id: Id
    history_version: int = Field(ge=0)
    structure: list[str]  # the steps, in order; the last describes what the user wants next
    steps: list[Annotated[str, StringConstraints(max_length=1000)]]
    step_vectors: list[list[float]]
    pattern_version: str
    model_version: str
    created_at: AwareDatetime


class ByItem(Contract):
    """Internal hop keyed by item: a catalog item or an interaction, in one ordered stream per item.

    Routing both through one item-partitioned topic serialises an item's upserts and the joins of its
    interactions in one agent, whatever partitioner the original producers used.
    """

    item: CatalogItem | None = None
    interaction: Interaction | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ByItem:
        if (self.item is None) == (self.interaction is None):
            raise ValueError("exactly one of item or interaction must be set")
        return self


class ByUser(Contract):
    """Internal hop keyed by user: an interaction whose item is known."""

    interaction: Interaction


class ControlRecord(Contract):
    """Operator state on the control topic (key: name), e.g. which state generation serves."""

    name: Literal["generation"]
    generation: int = Field(ge=1)
    from_timestamp_ms: int | None = None
    updated_at: AwareDatetime


class RankRequest(BaseModel):
    """A ranking service's query: score ``candidates`` for the user, or generate the top ``k`` when there are none."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: Id
    candidates: list[Id] | None = Field(default=None, max_length=10_000)
    k: int = Field(default=10, ge=1, le=100)

    @field_validator("candidates")
    @classmethod
    def _each_candidate_once(cls, candidates: list[str] | None) -> list[str] | None:
        """A repeated id is scored once, where it first appears; an empty list is refused (omitting it asks for the
        top ``k``, which an empty list would silently not)."""
        if candidates is None:
            return None
        if not candidates:
            raise ValueError("candidates is empty: leave it out to generate the top k")
        return list(dict.fromkeys(candidates))


class RankSource(str, Enum):
    MODEL = "model"  # the ranker, from the user's history
    COLD_START = "cold-start"  # unknown user or no rankable history: popular and fresh items


class ScoredItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: str
    score: float  # log-likelihood under the ranker; for cold-start answers, a popularity score


class RankResponse(BaseModel):
    """Items best first; candidate ids the ranker does not know are listed in ``unknown``, not scored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: str
    items: list[ScoredItem]
    unknown: list[str] = Field(default_factory=list)
    source: RankSource
    model_version: str


class DeadLetterReason(str, Enum):
    OVERSIZE = "oversize"
    MALFORMED_JSON = "malformed-json"
    UNKNOWN_SCHEMA_VERSION = "unknown-schema-version"
    INVALID = "invalid"  # wrong types, missing or unknown fields, constraint violations
    PENDING_OVERFLOW = "pending-overflow"  # too many interactions waiting for an item that has not arrived
    PROCESSING = "processing"  # valid record that an agent failed on
    INVALID_OUTPUT = "invalid-output"  # the reasoner's answer failed validation after every retry
