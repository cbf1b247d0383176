"""The fuzzed mix itself: every bad record fails its contract for the reason it is labelled with, every good
one passes, and the account adds up (the fault tests and the load benchmark rely on both)."""

from __future__ import annotations

from collections import Counter

import pytest

from reaseq.contracts import CatalogItem, DeadLetterReason, Interaction
from reaseq.settings import Settings
from reaseq.topics import ITEMS
from reaseq.wire import ContractError, decode
from tests.support.fuzz import BAD_KINDS, ORPHAN_PREFIX, fuzzed_mix

SETTINGS = Settings(max_message_bytes=4096, pending_limit=5)


def reason_of(model: type[CatalogItem | Interaction], value: bytes | None) -> DeadLetterReason | None:
    try:
        decode(model, value, SETTINGS.max_message_bytes)
    except ContractError as error:
        return error.reason
    return None


@pytest.mark.parametrize("kind", BAD_KINDS, ids=lambda kind: kind.name)
def test_each_bad_kind_fails_for_its_reason(kind) -> None:  # type: ignore[no-untyped-def]
    mix = fuzzed_mix(SETTINGS, good=50, bad=40, seed=3, users=5, items=10, kinds=[kind])
    records = mix.items if kind.topic == ITEMS.name else mix.events
    model = CatalogItem if kind.topic == ITEMS.name else Interaction
    reasons = Counter(reason_of(model, value) for _, value in records)
    assert reasons == {None: len(records) - 40, kind.reason: 40}


def test_the_mix_is_deterministic_and_its_account_adds_up() -> None:
    mix = fuzzed_mix(SETTINGS, good=400, bad=260, seed=9, users=30, items=20, resent=25, orphans=12)
    assert mix == fuzzed_mix(SETTINGS, good=400, bad=260, seed=9, users=30, items=20, resent=25, orphans=12)
    assert (
        mix.events != fuzzed_mix(SETTINGS, good=400, bad=260, seed=10, users=30, items=20, resent=25, orphans=12).events
    )
    assert sum(mix.bad.values()) == 260 and len(mix.bad) == len(BAD_KINDS)
    assert len(mix.items) + len(mix.events) == 20 + 400 + 25 + 260 + 2 * 12

    events = [
        decode(Interaction, value, SETTINGS.max_message_bytes)
        for _, value in mix.events
        if reason_of(Interaction, value) is None
    ]
    known = [event for event in events if not event.item_id.startswith(ORPHAN_PREFIX)]
    assert len({event.event_id for event in known}) == 400 == sum(mix.applied.values())
    assert len(known) == 425  # the re-sent ones carry their original's event id
    orphans = [event for event in events if event.item_id.startswith(ORPHAN_PREFIX)]
    assert len(orphans) == 2 * 12 and len({event.event_id for event in orphans}) == 12 and mix.held == 5
    assert mix.dead_letters[DeadLetterReason.PENDING_OVERFLOW.value] == 2 * (12 - 5)  # each copy of those not kept
    assert sum(mix.dead_letters.values()) == 260 + 2 * (12 - 5)

    both = mix + fuzzed_mix(SETTINGS, good=100, bad=13, seed=10, users=30, items=20, orphans=6)
    assert sum(both.applied.values()) == 500 and both.held == 10 and len(both.item_ids) == 20
    assert sum(both.dead_letters.values()) == 274 + 13 + 2 * (6 - 5)
