"""Publishing JSON-lines files of catalog items or interactions onto the source topics."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Producer
from rich.progress import Progress

from kafka_adapter import clients
from kafka_adapter.deadletters import producer_send, send_dead_letter
from reaseq.contracts import CatalogItem, Contract, Interaction
from reaseq.deadletters import DeadLetter
from reaseq.settings import Settings
from reaseq.topics import EVENTS, ITEMS, TopicSpec, topic_name
from reaseq.wire import ContractError, decode

KINDS: dict[str, tuple[type[Contract], TopicSpec]] = {"items": (CatalogItem, ITEMS), "events": (Interaction, EVENTS)}


@dataclass
class PublishSummary:
    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def producer(bootstrap: str) -> Producer:
    # murmur2 is the partitioner of the Java clients and of Faust, so keys land where every client expects.
    return clients.producer(bootstrap, {"partitioner": "murmur2_random", "linger.ms": 5, "enable.idempotence": False})


def _key(record: Contract) -> bytes:
    return (record.item_id if isinstance(record, CatalogItem) else record.user_id).encode()  # type: ignore[attr-defined]


def publish_lines(
    settings: Settings, bootstrap: str, kind: str, lines: Iterable[bytes], source: str, validate: bool = True
) -> PublishSummary:
    """Publish records; invalid ones go to the dead-letter topic with the reason and ``source:line``.

    With ``validate=False`` every line is sent as it is and the stream agents judge it.
    """
    model, spec = KINDS[kind]
    topic = topic_name(settings, spec)
    summary = PublishSummary()
    out = producer(bootstrap)
    send = producer_send(out)
    for number, line in enumerate(lines, start=1):
        raw = line.rstrip(b"\r\n")
        if not raw.strip():
            continue
        if not validate:
            out.produce(topic, value=raw)
            summary.accepted += 1
        else:
            try:
                record = decode(model, raw, settings.max_message_bytes)
            except ContractError as exc:
                summary.rejected += 1
                summary.reasons[exc.reason.value] = summary.reasons.get(exc.reason.value, 0) + 1
                send_dead_letter(
                    settings, DeadLetter(exc.reason, exc.detail, source, -1, number, "publish", None, raw), send
                )
            else:
                out.produce(topic, key=_key(record), value=raw)
                summary.accepted += 1
        out.poll(0)
    if out.flush(60) != 0:
        raise RuntimeError("some records were not acknowledged by the broker")
    return summary


def _lines_with_progress(path: Path, progress: Progress) -> Iterator[bytes]:
    task = progress.add_task(f"publishing {path.name}", total=path.stat().st_size)
    with path.open("rb") as handle:
        for line in handle:
            progress.advance(task, len(line))
            yield line


def publish_file(settings: Settings, bootstrap: str, kind: str, path: Path, validate: bool = True) -> PublishSummary:
    """Publish a JSON-lines file with a progress bar."""
    with Progress(transient=True) as progress:
        return publish_lines(settings, bootstrap, kind, _lines_with_progress(path, progress), str(path), validate)
