"""Histories agent: each user's recent interactions, a user feature update per change, debounced interest requests.

A request deferred to the end of its user's quiet time is also written to the ``interest-due`` table until it is
sent, so a worker killed meanwhile, or a partition moved to another worker, does not drop it: the partition's
owner sends it once the table is recovered. A rebalance clears the worker's own timers, so that the request is
sent by the partition's owner alone, once.
"""

from __future__ import annotations

import time

import faust
from faust.types import TP

from reaseq.contracts import ByUser, InterestRequest, UserFeatureUpdate, utcnow
from reaseq.metrics import QUEUE_DEPTH
from reaseq.wire import decode, encode
from streams.app import StreamApp
from streams.deadletter import guarded
from streams.debounce import Debouncer
from streams.state import UserState


def register(sa: StreamApp) -> None:
    histories, due = sa.tables.histories, sa.tables.interest_due
    topics = sa.topics
    settings = sa.settings
    debouncer = Debouncer(settings.interest_debounce_s)

    async def request_interests(user_id: str, state: UserState) -> None:
        request = InterestRequest(
            user_id=user_id,
            history_version=state.version,
            item_ids=[entry.item_id for entry in state.history],
            requested_at=utcnow(),
        )
        await topics.interest_requests.send(key=user_id.encode(), value=encode(request))

    async def handle(raw: bytes | None) -> None:
        interaction = decode(ByUser, raw, settings.max_message_bytes).interaction
        user_id = interaction.user_id
        stored = histories.get(user_id)
        state = UserState.model_validate_json(stored) if stored else UserState()
        if not state.apply(interaction, settings.history_length, settings.dedup_window):
            return  # redelivered or replayed: already in the history
        update = UserFeatureUpdate(
            user_id=user_id, version=state.version, history=state.history, as_of=state.history[-1].event_time
        )
        await topics.user_features.send(key=user_id.encode(), value=encode(update))
        was_waiting = debouncer.is_waiting(user_id)
        if debouncer.offer(user_id, time.monotonic()):
            await request_interests(user_id, state)
            if was_waiting:  # this request answers for the trailing one too
                due.pop(user_id.encode(), None)
        elif not was_waiting:
            due[user_id.encode()] = str(state.version).encode()
        histories[user_id] = state.model_dump_json().encode()

    @sa.app.agent(topics.by_user, name="histories")
    async def histories_agent(stream):
        async for event in stream.events():
            await guarded(sa, event, "histories", handle)

    @sa.app.timer(interval=max(settings.interest_debounce_s / 4, 0.05))
    async def flush_interest_requests() -> None:
        now = time.monotonic()
        for user_id in debouncer.pop_due(now):
            stored = histories.get(user_id)
            if stored:
                await request_interests(user_id, UserState.model_validate_json(stored))
                due.pop(user_id.encode(), None)
        debouncer.forget_older_than(now)
        QUEUE_DEPTH.labels("interest-debounce").set(debouncer.waiting)

    @sa.app.on_partitions_revoked.connect  # type: ignore[arg-type]  # faust accepts coroutine receivers
    async def forget_deferred_requests(app: faust.App, revoked: set[TP], **kwargs: object) -> None:
        """Faust revokes every partition on a rebalance and then recovers the tables, whose owners send what is due.

        A timer left running here would send again what the owner sends, and its tombstone could hide a request
        deferred later by the owner.
        """
        debouncer.clear()
        QUEUE_DEPTH.labels("interest-debounce").set(0)

    @due.on_recover
    async def send_requests_left_due() -> None:
        """After a restart or a rebalance: the deferred requests of this worker's partitions that were never sent."""
        for key in list(due.keys()):
            stored = histories.get(key.decode())
            if stored:
                await request_interests(key.decode(), UserState.model_validate_json(stored))
            due.pop(key, None)
