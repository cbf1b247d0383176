"""The wire contracts: what is accepted, and the reason given for everything that is not."""

from __future__ import annotations

import contextlib
import json

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError

from reaseq.contracts import CatalogItem, DeadLetterReason, Interaction, RankRequest
from reaseq.wire import ContractError, decode, encode

ITEM = {
    "schema_version": 1,
    "item_id": "i1",
    "title": "Red shoe",
    "brand": "Acme",
    "categories": ["shoes"],
    "price": 10.5,
    "attributes": {"size": "42", "vegan": True},
    "event_time": "2026-01-01T00:00:00Z",
}
EVENT = {"schema_version": 1, "user_id": "u1", "item_id": "i1", "kind": "view", "event_time": "2026-01-01T00:01:00Z"}


def reason_of(model: type, raw: bytes, limit: int = 10_000) -> DeadLetterReason:
    with pytest.raises(ContractError) as caught:
        decode(model, raw, limit)
    return caught.value.reason


def test_valid_records_round_trip() -> None:
    item = decode(CatalogItem, orjson.dumps(ITEM), 10_000)
    assert decode(CatalogItem, encode(item), 10_000) == item
    event = decode(Interaction, orjson.dumps(EVENT), 10_000)
    assert event.event_id and decode(Interaction, encode(event), 10_000) == event


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", DeadLetterReason.MALFORMED_JSON),
        (b"", DeadLetterReason.MALFORMED_JSON),
        (b"[1, 2]", DeadLetterReason.INVALID),
        (orjson.dumps({**ITEM, "schema_version": 2}), DeadLetterReason.UNKNOWN_SCHEMA_VERSION),
        (
            orjson.dumps({k: v for k, v in ITEM.items() if k != "schema_version"}),
            DeadLetterReason.UNKNOWN_SCHEMA_VERSION,
        ),
        (orjson.dumps({**ITEM, "schema_version": True}), DeadLetterReason.UNKNOWN_SCHEMA_VERSION),
        (orjson.dumps({k: v for k, v in ITEM.items() if k != "title"}), DeadLetterReason.INVALID),
        (orjson.dumps({**ITEM, "price": "cheap"}), DeadLetterReason.INVALID),
        (orjson.dumps({**ITEM, "price": -1}), DeadLetterReason.INVALID),
        (orjson.dumps({**ITEM, "event_time": "2026-01-01T00:00:00"}), DeadLetterReason.INVALID),  # no time zone
        (orjson.dumps({**ITEM, "colour": "red"}), DeadLetterReason.INVALID),  # unknown field
        (orjson.dumps({**ITEM, "description": "x" * 20_000}), DeadLetterReason.OVERSIZE),
    ],
)
def test_bad_items_are_rejected_with_their_reason(raw: bytes, reason: DeadLetterReason) -> None:
    assert reason_of(CatalogItem, raw) is reason


def test_bad_interaction_kind_is_invalid_and_the_error_names_the_field() -> None:
    with pytest.raises(ContractError) as caught:
        decode(Interaction, orjson.dumps({**EVENT, "kind": "like"}), 10_000)
    assert caught.value.reason is DeadLetterReason.INVALID and "kind" in caught.value.detail


def test_event_id_is_derived_deterministically_when_absent() -> None:
    first, second = (decode(Interaction, orjson.dumps(EVENT), 10_000) for _ in range(2))
    assert first.event_id == second.event_id
    other = decode(Interaction, orjson.dumps({**EVENT, "kind": "click"}), 10_000)
    assert other.event_id != first.event_id


def test_content_hash_ignores_event_time_only() -> None:
    base = decode(CatalogItem, orjson.dumps(ITEM), 10_000)
    later = decode(CatalogItem, orjson.dumps({**ITEM, "event_time": "2026-02-01T00:00:00Z"}), 10_000)
    changed = decode(CatalogItem, orjson.dumps({**ITEM, "price": 11.0}), 10_000)
    assert base.content_hash() == later.content_hash() != changed.content_hash()


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
_FIELDS = st.sampled_from(["item_id", "user_id", "title", "kind", "event_time", "categories", "price", "attributes"])
_RECORDS = st.builds(
    lambda body, versioned: json.dumps({**body, "schema_version": 1} if versioned else body).encode(),
    st.dictionaries(_FIELDS | st.text(max_size=8), _JSON_VALUES, max_size=8),
    st.booleans(),
)


@hsettings(max_examples=300)
@given(st.binary(max_size=300) | _RECORDS)
def test_any_bytes_either_decode_or_raise_contract_error(raw: bytes) -> None:
    for model in (CatalogItem, Interaction):
        with contextlib.suppress(ContractError):
            decode(model, raw, 10_000)


def test_a_rank_request_scores_each_candidate_once_and_refuses_an_empty_list() -> None:
    assert RankRequest(user_id="u", candidates=["a", "b", "a", "c", "b"]).candidates == ["a", "b", "c"]
    with pytest.raises(ValidationError, match="candidates is empty"):
        RankRequest(user_id="u", candidates=[])
    assert RankRequest(user_id="u").candidates is None  # no list: the top k
