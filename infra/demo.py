"""`make demo`: the backbone on a generated catalog and interaction stream, then the resulting state."""

from __future__ import annotations

import shutil
import time
from collections import Counter

from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infra.stack import StackError, start_stack, stop_stack
from reaseq.contracts import UserFeatureUpdate
from reaseq.deadletters import DeadLetter
from reaseq.publish import publish_lines
from reaseq.settings import Settings
from reaseq.status import collect, render
from reaseq.synthetic import generate
from reaseq.topics import DEAD_LETTERS, USER_FEATURES, topic_name
from reaseq.wire import encode

BAD_RECORDS = [b"{not json", b'{"schema_version": 9, "user_id": "u"}', b'{"schema_version": 1, "user_id": "u"}']


def _follow(bootstrap: str, topic: str) -> Consumer:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reaseq-demo", "enable.auto.commit": False, "log_level": 0})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    return consumer


def _drain(consumer: Consumer, seconds: float) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = consumer.poll(0.05)
        if message is not None and message.error() is None:
            out.append((message.key(), message.value(), list(message.headers() or [])))
    return out


def run_demo(settings: Settings, n_items: int, n_users: int, n_events: int, console: Console) -> None:
    """Start broker and two workers, stream a generated world through them, show the state, stop everything."""
    settings = settings.model_copy(update={"state_dir": settings.state_dir / "demo"})
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    world = generate(n_items, n_users, n_events)
    try:
        state = start_stack(settings, workers=2, generation=1)
    except StackError as exc:
        console.print(f"[red]{exc}[/red]")
        return
    bootstrap = state.bootstrap
    console.print(f"broker {bootstrap}, stream workers {[w.pid for w in state.workers]} (logs in {settings.state_dir}/run)")
    try:
        late = world.items[: n_items // 10]  # published after their interactions: held pending, then resolved
        publish_lines(settings, bootstrap, "items", (encode(i) for i in world.items[len(late):]), "demo")
        publish_lines(settings, bootstrap, "events", [encode(i) for i in world.interactions] + BAD_RECORDS, "demo", validate=False)
        publish_lines(settings, bootstrap, "items", (encode(i) for i in late), "demo")
        console.print(f"published {n_items} items ({len(late)} after their interactions), {n_events} interactions, {len(BAD_RECORDS)} bad records")

        features = _follow(bootstrap, topic_name(settings, USER_FEATURES))
        latest: dict[bytes, UserFeatureUpdate] = {}
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("interactions in user state", total=n_events, rate="")
            started = time.monotonic()
            first_seen: float | None = None
            while sum(u.version for u in latest.values()) < n_events and time.monotonic() - started < 600:
                for key, value, _ in _drain(features, 0.5):
                    first_seen = first_seen or time.monotonic()
                    latest[key] = UserFeatureUpdate.model_validate_json(value)  # type: ignore[index,arg-type]
                applied = sum(u.version for u in latest.values())
                rate = applied / (time.monotonic() - first_seen) if first_seen else 0.0
                progress.update(task, completed=applied, rate=f"{rate:,.0f} events/s")
        features.close()

        console.print(render(collect(settings, bootstrap)))
        dead = _follow(bootstrap, topic_name(settings, DEAD_LETTERS))
        reasons = Counter(DeadLetter.from_record(k, v, h).reason.value for k, v, h in _drain(dead, 2.0))
        dead.close()
        console.print(f"dead letters by reason: {dict(reasons)}")

        titles = {i.item_id: i.title for i in world.items}
        table = Table(title="a few users: interests planted by the generator, and the history the stream keeps")
        for column in ("user", "interests", "events", "latest interactions"):
            table.add_column(column)
        for user_id in list(world.interests)[:5]:
            update = latest.get(user_id.encode())
            recent = ", ".join(f"{e.kind.value} {titles[e.item_id]}" for e in update.history[-3:]) if update else "-"
            table.add_row(user_id, ", ".join(world.interests[user_id]), str(update.version if update else 0), recent)
        console.print(table)
    finally:
        stop_stack(settings)
        console.print("stopped broker and workers")
