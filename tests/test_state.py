"""Table state transitions and the debouncer, without a broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reaseq.contracts import Interaction, InteractionKind
from streams.debounce import Debouncer
from streams.state import PendingInteractions, UserState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(item: str, seconds: int, user: str = "u1") -> Interaction:
    return Interaction(
        user_id=user, item_id=item, kind=InteractionKind.VIEW, event_time=T0 + timedelta(seconds=seconds)
    )


def test_history_is_idempotent_ordered_and_bounded() -> None:
    state = UserState()
    assert state.apply(event("a", 10), history_length=3, dedup_window=10)
    assert not state.apply(event("a", 10), history_length=3, dedup_window=10)  # redelivery
    assert state.apply(event("c", 30), 3, 10)
    assert state.apply(event("b", 20), 3, 10)  # late arrival goes in event-time order
    assert [e.item_id for e in state.history] == ["a", "b", "c"]
    assert state.apply(event("d", 40), 3, 10)
    assert [e.item_id for e in state.history] == ["b", "c", "d"] and state.version == 4


def test_pending_keeps_each_event_once() -> None:
    pending = PendingInteractions()
    assert pending.add(event("x", 1)) and not pending.add(event("x", 1)) and pending.add(event("x", 2))
    assert len(pending.interactions) == 2


def test_debouncer_fires_leading_edge_then_once_after_quiet_time() -> None:
    debouncer = Debouncer(quiet_s=2.0)
    assert debouncer.offer("u", now=0.0)
    assert not debouncer.offer("u", now=0.5) and not debouncer.offer("u", now=1.0)
    assert debouncer.pop_due(now=1.9) == []
    assert debouncer.pop_due(now=2.0) == ["u"]
    assert debouncer.pop_due(now=5.0) == []
    assert debouncer.offer("u", now=5.0)  # quiet long enough: fires at once again


def test_a_cleared_debouncer_has_nothing_due_and_fires_at_once() -> None:
    debouncer = Debouncer(quiet_s=2.0)
    assert debouncer.offer("u", now=0.0) and not debouncer.offer("u", now=0.5)
    debouncer.clear()  # a rebalance: the partition's owner sends what was deferred
    assert debouncer.waiting == 0 and debouncer.pop_due(now=3.0) == []
    assert debouncer.offer("u", now=3.0)
