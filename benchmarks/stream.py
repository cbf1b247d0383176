"""Stream benchmark: the stream agents on one worker against a bare consumer of the same topic, and latency.

``python -m benchmarks.stream`` (``make bench-stream``) starts its own embedded broker and one worker, so
nothing else needs to run, and writes ``benchmarks/results/stream.json``. One run, three phases:

1. bare rate: a plain aiokafka consumer reads the pre-filled events topic (then again, decoding every
   record as the ingest agent does);
2. agent rate: one worker takes the same records through ingest -> catalog -> histories; counted on the
   user-features topic, which gets one update per interaction applied to a history, from the first update's
   create time to the last (start-up and the consumer-group join excluded);
3. latency: new interactions offered at a fixed rate to the still running worker; per event, the time from
   handing it to the producer to the create time of the update that applied it (``--latency-from seen``:
   to this process reading that update, which costs the embedded broker enough to slow the worker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from subprocess import Popen
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import KafkaError, Message, Producer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchmarks.common import machine, percentile
from infra.broker import EmbeddedBroker
from infra.processes import spawn_worker, stop_process
from kafka_adapter.provision import provision
from kafka_adapter.publish import producer
from reaseq.contracts import CatalogItem, Interaction, InteractionKind
from reaseq.runfiles import log_tail, run_dir
from reaseq.settings import Settings
from reaseq.topics import EVENTS, ITEMS, USER_FEATURES, topic_name
from reaseq.wire import decode, encode

RESULTS = Path(__file__).parent / "results" / "stream.json"
TARGET_AGENT_OVER_RAW = 0.5
TARGET_P99_MS = 250.0
GENERATION = 1
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
LATENCY_USER_PREFIX = "lat-u"

console = Console()


# --- workload ---------------------------------------------------------------------------------------------


def catalog_records(count: int) -> list[tuple[bytes, bytes]]:
    """Catalog items ``i0``.. as (key, value) records."""
    records = []
    for n in range(count):
        item = CatalogItem(
            item_id=f"i{n}", title=f"Item {n}", categories=[f"c{n % 20}"], price=float(n % 100), event_time=EPOCH
        )
        records.append((item.item_id.encode(), encode(item)))
    return records


def interaction_records(
    count: int, users: int, items: int, user_prefix: str, start: datetime, rng: random.Random
) -> list[tuple[bytes, bytes, str]]:
    """Interactions as (key, value, wire event_time); every event is new to its user's history.

    Event times step by one millisecond, so they are unique across the run and each one identifies its event.
    """
    kinds = list(InteractionKind)
    records = []
    for n in range(count):
        event = Interaction(
            user_id=f"{user_prefix}{n % users}",
            item_id=f"i{rng.randrange(items)}",
            kind=rng.choice(kinds),
            event_time=start + timedelta(milliseconds=n),
        )
        value = encode(event)
        records.append((event.user_id.encode(), value, orjson.loads(value)["event_time"]))
    return records


class Delivery:
    """Counts failed deliveries of a producer, so a lost record fails the run instead of skewing it."""

    def __init__(self) -> None:
        self.failed = 0
        self.first_error: KafkaError | None = None

    def __call__(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self.failed += 1
            self.first_error = self.first_error or error

    def check(self, out: Producer) -> None:
        if out.flush(60) != 0 or self.failed:
            raise RuntimeError(f"{self.failed} records not delivered: {self.first_error}")


def produce(out: Producer, topic: str, key: bytes, value: bytes, delivery: Delivery) -> None:
    while True:
        try:
            out.produce(topic, key=key, value=value, on_delivery=delivery)
            return
        except BufferError:  # librdkafka's local queue is full: let deliveries drain first
            out.poll(0.05)


def publish(out: Producer, topic: str, records: Iterable[tuple[bytes, bytes]]) -> None:
    delivery = Delivery()
    for key, value in records:
        produce(out, topic, key, value, delivery)
        out.poll(0)
    delivery.check(out)


# --- measurements -----------------------------------------------------------------------------------------


async def assigned_consumer(bootstrap: str, topic: str, partitions: int, **config: Any) -> AIOKafkaConsumer:
    """A consumer of every partition from the beginning; no group, so no join to wait for."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **config)
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    await consumer.seek_to_beginning()
    return consumer


async def bare_rate(
    bootstrap: str, topic: str, partitions: int, expected: int, parse: Callable[[bytes | None], object] | None
) -> float:
    """Records per second a plain aiokafka consumer reads ``expected`` records at, from its first fetch.

    Progress is counted from records received: this broker's high watermark is wrong (see infra.broker).
    """
    consumer = await assigned_consumer(bootstrap, topic, partitions)
    try:
        seen = 0
        started = time.perf_counter()
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000)
            if not batches and time.perf_counter() - started > 60:
                raise TimeoutError(f"bare consumer read {seen} of {expected} records")
            for records in batches.values():
                if parse is not None:
                    for record in records:
                        parse(record.value)
                seen += len(records)
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


class UpdateFollower:
    """Reads the user-features topic: when each update was emitted, and which offered events it applied.

    The worker's producer stamps every update with its create time, the moment the histories agent emitted the
    new state; rates and latencies come from those stamps, so this consumer may read lazily. It should: on the
    embedded broker a fetch costs time in proportion to the partition's length in batches, so a consumer polling
    hard slows the very worker it measures.
    """

    def __init__(self, consumer: AIOKafkaConsumer, interval_s: float) -> None:
        self.consumer = consumer
        self.interval_s = interval_s
        self.stamps: list[int] = []  # create time (ms) of every update read
        self.probes: dict[str, float] = {}  # wire event_time of an offered event -> wall time it was produced
        self.emitted_s: list[float] = []  # per offered event: produced -> its update emitted
        self.seen_s: list[float] = []  # per offered event: produced -> its update read here

    @property
    def count(self) -> int:
        return len(self.stamps)

    async def run(self) -> None:
        prefix = LATENCY_USER_PREFIX.encode()
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batches.values():
                for record in records:
                    self.stamps.append(record.timestamp)
                    if self.probes and record.key is not None and record.key.startswith(prefix):
                        self._match(record.value, record.timestamp / 1000, now)
            if self.interval_s:
                await asyncio.sleep(self.interval_s)

    def _match(self, value: bytes | None, emitted: float, now: float) -> None:
        # An update's history holds the event it applied; one user's updates are ordered (one partition),
        # so the first update holding an offered event is the one that applied it.
        for entry in orjson.loads(value or b"{}").get("history", ()):
            produced = self.probes.pop(entry["event_time"], None)
            if produced is not None:
                self.emitted_s.append(emitted - produced)
                self.seen_s.append(now - produced)


def emission_rates(stamps: list[int]) -> tuple[float, list[float]]:
    """Updates per second from the first emitted to the last (start-up and group join excluded), and per quarter."""
    ordered = sorted(stamps)

    def rate(first: int, last: int) -> float:
        return (last - first) / (max(ordered[last] - ordered[first], 1) / 1000)

    quarter = len(ordered) // 4
    return rate(0, len(ordered) - 1), [rate(q * quarter, (q + 1) * quarter - 1) for q in range(4)]


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def check_alive(worker: Popen[bytes]) -> None:
    if worker.poll() is not None:
        raise RuntimeError(f"worker exited with code {worker.returncode}")


async def await_updates(follower: UpdateFollower, expected: int, worker: Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with progress_bar() as progress:
        task = progress.add_task("agent: user-feature updates", total=expected)
        while follower.count < expected:
            check_alive(worker)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{follower.count} of {expected} updates within {timeout_s:.0f}s")
            progress.update(task, completed=follower.count)
            await asyncio.sleep(0.2)
        progress.update(task, completed=follower.count)


async def offer_load(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes, bytes, str]],
    rate: float,
    follower: UpdateFollower,
    worker: Popen[bytes],
    drain_s: float,
) -> float:
    """Produce ``records`` paced at ``rate`` per second, then wait for their updates; returns the achieved rate."""
    # The publisher's producer, but lingering 1 ms, not 5: at this load the batching would only add latency.
    out = Producer(
        {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 1, "enable.idempotence": False}
    )
    delivery = Delivery()
    with progress_bar() as progress:
        task = progress.add_task(f"latency: offering {rate:,.0f} events/s", total=len(records))
        started = time.perf_counter()
        for n, (key, value, event_time) in enumerate(records):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif n % 50 == 0:
                await asyncio.sleep(0)  # behind schedule: still let the follower read
            follower.probes[event_time] = time.time()
            produce(out, topic, key, value, delivery)
            out.poll(0)
            if n % 100 == 0:
                progress.update(task, completed=n)
        achieved = len(records) / (time.perf_counter() - started)
        progress.update(task, completed=len(records))
        await asyncio.to_thread(delivery.check, out)
        deadline = time.monotonic() + drain_s
        while follower.probes and time.monotonic() < deadline:
            check_alive(worker)
            await asyncio.sleep(0.1)
    return achieved


# --- the run ----------------------------------------------------------------------------------------------


def worker_log_tail(settings: Settings, lines: int = 20) -> str:
    return log_tail(run_dir(settings) / "bench.g1.log", lines)


async def measure(args: argparse.Namespace, settings: Settings, bootstrap: str) -> dict[str, Any]:
    rng = random.Random(args.seed)
    events_topic = topic_name(settings, EVENTS)
    features_topic = topic_name(settings, USER_FEATURES)
    partitions = settings.partitions

    with console.status("publishing catalog and interactions"):
        out = producer(bootstrap)
        publish(out, topic_name(settings, ITEMS), catalog_records(args.items))
        events = interaction_records(args.events, args.users, args.items, "u", EPOCH, rng)
        publish(out, events_topic, ((key, value) for key, value, _ in events))

    with console.status("bare consumer"):
        # Median of a few reads: one read of the whole topic takes well under a second.
        raw = statistics.median(
            [await bare_rate(bootstrap, events_topic, partitions, args.events, None) for _ in range(args.repeats)]
        )

        def parse(value: bytes | None) -> Interaction:
            return decode(Interaction, value, settings.max_message_bytes)

        raw_decode = statistics.median(
            [await bare_rate(bootstrap, events_topic, partitions, args.events, parse) for _ in range(args.repeats)]
        )

    # Measuring "seen", the follower must poll hard with a short fetch wait: this broker answers an idle aiokafka
    # fetch after about half its wait, not when data arrives.
    seen = args.latency_from == "seen"
    consumer = await assigned_consumer(bootstrap, features_topic, partitions, fetch_max_wait_ms=20 if seen else 500)
    follower = UpdateFollower(consumer, interval_s=0.0 if seen else 0.25)
    following = asyncio.create_task(follower.run())
    spawned = time.time()
    worker = spawn_worker(settings, bootstrap, GENERATION, "bench")
    try:
        await await_updates(follower, args.events, worker, args.timeout)
        agent, trend = emission_rates(follower.stamps[: args.events])
        worker_start = min(follower.stamps[: args.events]) / 1000 - spawned

        # Later event times than phase 2 and users of their own, so each probe is a new, identifiable entry.
        probes = interaction_records(
            int(args.rate * args.duration),
            args.latency_users,
            args.items,
            LATENCY_USER_PREFIX,
            EPOCH + timedelta(days=1),
            rng,
        )
        offered = await offer_load(bootstrap, events_topic, probes, args.rate, follower, worker, args.drain)
        drained = time.time()
    except BaseException:
        console.print(f"[red]worker log tail:[/red]\n{worker_log_tail(settings)}")
        raise
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await follower.consumer.stop()
        stop_process(worker.pid)

    observed = sorted(1000 * s for s in (follower.seen_s if seen else follower.emitted_s))
    if not observed:
        raise RuntimeError("no offered event reached the user-features topic")
    # An event never seen waited at least until the end of the drain: counted so, the percentiles stay honest
    # (lower bounds) when the worker cannot keep up, instead of describing only the lucky events.
    latencies = sorted(observed + [1000 * (drained - produced) for produced in follower.probes.values()])
    return {
        "raw_events_per_s": round(raw),
        "raw_decode_events_per_s": round(raw_decode),
        "agent_events_per_s": round(agent),
        "agent_events_per_s_by_quarter": [round(r) for r in trend],
        "agent_over_raw": round(agent / raw, 4),
        "agent_over_raw_decode": round(agent / raw_decode, 4),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(latencies[-1], 1),
        "latency_measure": args.latency_from,
        "worker_start_s": round(worker_start, 1),
        "events": args.events,
        "users": args.users,
        "items": args.items,
        "offered_rate": args.rate,
        "achieved_offered_rate": round(offered, 1),
        "offered": len(probes),
        "observed": len(observed),
        "percentiles_are_lower_bounds": len(observed) < len(probes),
        "targets": {"agent_over_raw_min": TARGET_AGENT_OVER_RAW, "p99_ms_max": TARGET_P99_MS},
        "workers": 1,
        "partitions": partitions,
        "date": date.today().isoformat(),
        "machine": machine(),
        "load_average_1m_before": args.load_before,
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }


def report(result: dict[str, Any]) -> None:
    def verdict(ok: bool) -> str:
        return "[green]met[/green]" if ok else "[red]missed[/red]"

    table = Table(title=f"Stream benchmark: {result['events']:,} events, one worker, {result['partitions']} partitions")
    for column in ("measure", "value", "target"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    table.add_row("bare aiokafka consumer", f"{result['raw_events_per_s']:,} events/s", "")
    table.add_row("bare consumer + decode", f"{result['raw_decode_events_per_s']:,} events/s", "")
    quarters = " / ".join(f"{r:,}" for r in result["agent_events_per_s_by_quarter"])
    table.add_row("agents (ingest→catalog→histories)", f"{result['agent_events_per_s']:,} events/s", "")
    table.add_row("  by quarter of the events", quarters, "")
    ratio = result["agent_over_raw"]
    table.add_row(
        "agent / bare", f"{ratio:.1%}", f"≥ {TARGET_AGENT_OVER_RAW:.0%} {verdict(ratio >= TARGET_AGENT_OVER_RAW)}"
    )
    table.add_row("agent / bare + decode", f"{result['agent_over_raw_decode']:.1%}", "")
    seen = f"{result['observed']:,}/{result['offered']:,} seen"
    if result["percentiles_are_lower_bounds"]:
        seen = f"[red]{seen}; the others count as the wait so far: lower bounds[/red]"
    load = f"{result['latency_measure']}, at {result['offered_rate']:,.0f} events/s offered ({seen})"
    table.add_row(f"latency p50 {load}", f"{result['p50_ms']:.1f} ms", "")
    table.add_row("latency p95", f"{result['p95_ms']:.1f} ms", "")
    p99 = result["p99_ms"]
    table.add_row("latency p99", f"{p99:.1f} ms", f"≤ {TARGET_P99_MS:.0f} ms {verdict(p99 <= TARGET_P99_MS)}")
    console.print(table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="interactions pre-filled for the rate phase")
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=1_000.0, help="offered load of the latency phase, events/s")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of offered load")
    parser.add_argument("--latency-users", type=int, default=1_000)
    parser.add_argument(
        "--latency-from",
        choices=("emitted", "seen"),
        default="emitted",
        help="latency end: the update's create time (emitted by the agent) or when this process reads it (seen)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="bare-consumer reads; the median counts")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds the worker gets for the rate phase")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for the last offered events")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Every figure here is CPU-bound: a busy machine shows in the results, so its load is recorded with them.
    args.load_before = round(os.getloadavg()[0], 2)
    logging.basicConfig(level=logging.ERROR)  # aiokafka warns about benign metadata races on a fresh broker
    state_dir = Path(tempfile.mkdtemp(prefix="reaseq-bench-"))
    broker = EmbeddedBroker(log_path=state_dir / "broker.log")
    try:
        with console.status("starting the embedded broker"):
            broker.start()
            settings = Settings(
                kafka_bootstrap=broker.bootstrap,
                state_dir=state_dir,
                topic_prefix=f"bench-{uuid.uuid4().hex[:8]}.",
                log_level="WARNING",
            )
            provision(settings, broker.bootstrap, generation=GENERATION)
        result = asyncio.run(measure(args, settings, broker.bootstrap))
    finally:
        broker.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
    report(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"written to {args.output}")


if __name__ == "__main__":
    main()
