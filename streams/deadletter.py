"""Dead-lettering inside agents: a bad record never stops an agent.

``guarded`` turns every failure of one record into exactly one dead-letter record and moves on, so
the count of inputs always equals what reached state plus what reached the dead-letter topic. Every record
is counted in ``reaseq_events_processed_total``, every dead letter in ``reaseq_dead_letters_total`` by reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from faust.types import EventT

from kafka_adapter.deadletters import send_dead_letter
from reaseq.contracts import DeadLetterReason
from reaseq.deadletters import DeadLetter
from reaseq.metrics import DEAD_LETTERED, EVENTS_PROCESSED
from reaseq.wire import ContractError
from streams.app import StreamApp

log = logging.getLogger(__name__)


async def dead_letter(sa: StreamApp, event: EventT, agent: str, reason: DeadLetterReason, detail: str) -> None:
    """Publish the event's original record to the dead-letter topic with why and where it came from."""
    message = event.message
    letter = DeadLetter(
        reason, detail, message.topic, message.partition, message.offset, agent, message.key, message.value
    )
    await send_dead_letter(
        sa.settings,
        letter,
        lambda _, key, value, headers: sa.topics.dead_letters.send(key=key, value=value, headers=headers),
    )
    DEAD_LETTERED.labels(agent, reason.value).inc()


async def guarded(sa: StreamApp, event: EventT, agent: str, handle: Callable[[bytes | None], Awaitable[None]]) -> None:
    """Run ``handle`` on one record; any failure becomes a dead letter instead of a crashed agent."""
    try:
        await handle(event.value)
    except ContractError as exc:
        await dead_letter(sa, event, agent, exc.reason, exc.detail)
    except Exception as exc:  # a bug or an unforeseen input must not stall the partition
        log.exception("record failed in agent", extra={"agent": agent})
        await dead_letter(sa, event, agent, DeadLetterReason.PROCESSING, f"{type(exc).__name__}: {exc}")
    EVENTS_PROCESSED.labels(agent).inc()
