"""Serving benchmark: the ranker called in-process against the same model through Triton (gRPC), and freshness.

``python -m benchmarks.serving`` (``make bench-serving``) starts its own embedded broker, one stream worker and
Triton, so nothing else needs to run, and writes ``benchmarks/results/serving.json``. For each model size:

1. a generated catalog and interactions go through the stream; a ranker of that size is trained for one epoch
   on them (latency does not depend on how well it is trained);
2. in-process: ``concurrency`` threads each call ``ServingRuntime.rank`` with one request at a time;
3. Triton: the same model directory served by tritonserver, ``concurrency`` threads each with its own gRPC
   client, so Triton's dynamic batcher stacks concurrent requests into one forward pass;
   each at concurrency 1, 8 and 32, with 100 known candidates per request and with top-10 generation;
   then the same cells driven by wrk (Debian's HTTP load generator, ``benchmarks.wrk``) against Triton's KServe v2
   HTTP endpoint: a client we did not write;
4. freshness: new items published on the items topic one by one; for each, the time from handing it to the
   producer until a Triton response first scores it (polled every 10 ms): through the stream, the semantic-ID
   writer (``reaseq ids``) and Triton's replica.

Every cell runs for ``--seconds`` after a warm-up; latency is per request, throughput is requests per second.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.common import machine, percentile
from benchmarks.sizes import RANKER_SIZES
from benchmarks.wrk import run_wrk
from infra.broker import EmbeddedBroker
from infra.processes import spawn_async_worker, spawn_worker, stop_process
from infra.synthetic import SyntheticWorld, generate
from infra.triton import TritonServer
from kafka_adapter.provision import provision
from kafka_adapter.publish import producer
from models.rqvae import RQVAEConfig
from models.tiger import TigerConfig, TigerRanker
from reaseq.contracts import CatalogItem, RankRequest, RankResponse
from reaseq.settings import Settings
from reaseq.topics import EVENTS, ITEMS, USER_FEATURES, topic_name
from reaseq.wire import encode
from serving.client import RankClient
from serving.runtime import ServingRuntime
from training.datasets import load_from_topics
from training.registry import ModelRepository
from training.train import TrainConfig, train

RESULTS = Path(__file__).parent / "results" / "serving.json"
TARGET_P99_MS_C8 = 20.0
TARGET_TRITON_OVER_INPROCESS = 0.75
TARGET_FRESHNESS_P95_S = 2.0
CONCURRENCY = (1, 8, 32)

console = Console()
Call = Callable[[RankRequest], RankResponse]


def run_cell(
    calls: list[Call],
    requests: list[RankRequest],
    seconds: float,
    warmup_s: float,
    thread_init: Callable[[], None] | None,
) -> dict[str, float]:
    """One thread per call function, each sending one request at a time, round robin over ``requests``."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + seconds

    def loop(call: Call, offset: int) -> None:
        if thread_init is not None:
            thread_init()
        own: list[float] = []
        index = offset
        while (now := time.perf_counter()) < stop_at:
            request = requests[index % len(requests)]
            index += len(calls)
            try:
                call(request)
            except Exception as error:  # counted and reported: a benchmark must not hide failures
                errors.append(f"{type(error).__name__}: {error}")
                continue
            if now >= measure_from:
                own.append(time.perf_counter() - now)
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=loop, args=(call, i)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "errors": len(errors),
        "p50_ms": round(1000 * percentile(ordered, 50), 2) if ordered else float("nan"),
        "p99_ms": round(1000 * percentile(ordered, 99), 2) if ordered else float("nan"),
        "throughput_rps": round(len(ordered) / seconds, 1),
    }


def request_sets(world: SyntheticWorld, seed: int) -> dict[str, list[RankRequest]]:
    rng = random.Random(seed)
    users = sorted({i.user_id for i in world.interactions})
    items = [item.item_id for item in world.items]
    return {
        "candidates100": [RankRequest(user_id=u, candidates=rng.sample(items, 100)) for u in users],
        "top10": [RankRequest(user_id=u, k=10) for u in users],
    }


def measure_grid(
    make_calls: Callable[[int], list[Call]],
    sets: dict[str, list[RankRequest]],
    args: argparse.Namespace,
    label: str,
    thread_init: Callable[[], None] | None = None,
) -> dict[str, Any]:
    grid: dict[str, Any] = {}
    for mode, requests in sets.items():
        for concurrency in CONCURRENCY:
            cell = run_cell(make_calls(concurrency), requests, args.seconds, args.warmup, thread_init)
            grid[f"c{concurrency}_{mode}"] = cell
            console.print(
                f"  {label} c={concurrency:<2} {mode:<13} p50 {cell['p50_ms']:7.2f} ms  p99 {cell['p99_ms']:7.2f} ms  {cell['throughput_rps']:7.1f} req/s  errors {cell['errors']}"
            )
    return grid


def freshness(settings: Settings, bootstrap: str, client: RankClient, user: str, count: int) -> list[float]:
    """Seconds from producing a new item to its first appearance in a Triton response."""
    out = producer(bootstrap)
    topic = topic_name(settings, ITEMS)
    delays = []
    for index in range(count):
        item = CatalogItem(
            item_id=f"fresh-{uuid.uuid4().hex[:8]}",
            title=f"Fresh arrival {index}: insulated waterproof shell",
            brand="Hearth",
            categories=["Outdoors"],
            event_time=datetime.now(UTC),
        )
        started = time.perf_counter()
        out.produce(topic, key=item.item_id.encode(), value=encode(item))
        out.flush(10)
        deadline = started + 30
        while client.rank(user, candidates=[item.item_id]).unknown:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{item.item_id} never appeared in a Triton response")
            time.sleep(0.01)
        delays.append(time.perf_counter() - started)
    return delays


def train_size(settings: Settings, bootstrap: str, config: TigerConfig, out: Path) -> Path:
    training = TrainConfig(
        dataset=Path("topics"),
        rqvae=RQVAEConfig(epochs=50),
        ranker=config,
        epochs=1,
        eval_every=1,
        max_eval_users=50,
        interest_model=False,  # serving latency is the ranker's
    )
    return train(training, out, settings.state_dir, data=load_from_topics(settings, bootstrap))


def measure_size(
    name: str, settings: Settings, bootstrap: str, world: SyntheticWorld, args: argparse.Namespace, root: Path
) -> dict[str, Any]:
    console.rule(f"model size: {name}")
    started = time.monotonic()
    model_dir = train_size(settings, bootstrap, RANKER_SIZES[name], root / "store")
    console.print(f"trained one epoch in {time.monotonic() - started:.0f} s: {model_dir}")
    sets = request_sets(world, args.seed)

    # In-process: its own replica folder, closed before Triton starts so both never compete for the CPU.
    runtime = ServingRuntime(
        model_dir, settings.model_copy(update={"state_dir": root / f"inprocess-{name}"}), bootstrap
    ).start()
    try:
        # one torch thread per caller thread: its fastest in-process setting here (see ServingRuntime)
        single = partial(torch.set_num_threads, 1)
        inprocess = measure_grid(lambda c: [lambda r: runtime.rank([r])[0]] * c, sets, args, "in-process", single)
    finally:
        runtime.close()

    triton_settings = settings.model_copy(update={"state_dir": root / f"triton-{name}"})
    ModelRepository(triton_settings).publish(model_dir)
    writer = spawn_async_worker(triton_settings, bootstrap, "ids")  # the fresh items' semantic IDs
    with TritonServer(triton_settings, bootstrap) as server:

        def clients(concurrency: int) -> list[Call]:
            return [RankClient(server.endpoints.grpc_url, timeout_s=30).send for _ in range(concurrency)]

        triton = measure_grid(clients, sets, args, "triton")
        wrk: dict[str, Any] = {}
        for mode, requests in sets.items():
            for concurrency in CONCURRENCY:
                cell = run_wrk(f"http://{server.endpoints.http_url}", requests, concurrency, args.seconds)
                wrk[f"c{concurrency}_{mode}"] = cell
                console.print(
                    f"  wrk http c={concurrency:<2} {mode:<13} p50 {cell['p50_ms']:7.2f} ms  p99 {cell['p99_ms']:7.2f} ms  {cell['throughput_rps']:7.1f} req/s  errors {cell['errors']}"
                )
        client = RankClient(server.endpoints.grpc_url, timeout_s=30)
        delays = sorted(freshness(settings, bootstrap, client, sets["top10"][0].user_id, args.fresh_items))
    stop_process(writer.pid)
    console.print(f"  freshness p50 {percentile(delays, 50):.3f} s, p95 {percentile(delays, 95):.3f} s")
    config = RANKER_SIZES[name]
    return {
        "model": config.model_dump(),
        "parameters": sum(p.numel() for p in TigerRanker.load(model_dir / "ranker").parameters()),
        "inprocess": inprocess,
        "triton": triton,
        "wrk_http": wrk,
        "freshness_s": {
            "p50": round(percentile(delays, 50), 3),
            "p95": round(percentile(delays, 95), 3),
            "items": len(delays),
        },
    }


def summary(sizes: dict[str, Any], headline: str) -> dict[str, Any]:
    row = sizes[headline]
    c8_triton, c8_local = row["triton"]["c8_candidates100"], row["inprocess"]["c8_candidates100"]
    return {
        "headline_size": headline,
        "triton_p99_ms_c8_candidates100": c8_triton["p99_ms"],
        "wrk_http_p99_ms_c8_candidates100": row["wrk_http"]["c8_candidates100"]["p99_ms"],
        "triton_over_inprocess_throughput_c8_candidates100": round(
            c8_triton["throughput_rps"] / c8_local["throughput_rps"], 3
        ),
        "freshness_p50_s": row["freshness_s"]["p50"],
        "freshness_p95_s": row["freshness_s"]["p95"],
    }


def report(result: dict[str, Any]) -> None:
    for name, row in result["sizes"].items():
        table = Table(title=f"{name} ranker ({row['parameters']:,} parameters): in-process vs Triton gRPC and wrk HTTP")
        for column in (
            "cell",
            "in-process p50/p99 ms",
            "in-process req/s",
            "triton p50/p99 ms",
            "triton req/s",
            "triton/in-process",
            "wrk http p50/p99 ms",
            "wrk req/s",
        ):
            table.add_column(column, justify="right")
        for cell, local in row["inprocess"].items():
            remote = row["triton"][cell]
            table.add_row(
                cell,
                f"{local['p50_ms']:.1f} / {local['p99_ms']:.1f}",
                f"{local['throughput_rps']:.1f}",
                f"{remote['p50_ms']:.1f} / {remote['p99_ms']:.1f}",
                f"{remote['throughput_rps']:.1f}",
                f"{remote['throughput_rps'] / local['throughput_rps']:.2f}" if local["throughput_rps"] else "-",
                f"{row['wrk_http'][cell]['p50_ms']:.1f} / {row['wrk_http'][cell]['p99_ms']:.1f}",
                f"{row['wrk_http'][cell]['throughput_rps']:.1f}",
            )
        console.print(table)
    for name in result["sizes"]:
        figures = summary(result["sizes"], name)
        console.print(
            f"{name}: triton p99 c8 x100 candidates {figures['triton_p99_ms_c8_candidates100']} ms (target <= {TARGET_P99_MS_C8}), "
            f"triton/in-process throughput {figures['triton_over_inprocess_throughput_c8_candidates100']} (target >= {TARGET_TRITON_OVER_INPROCESS}), "
            f"freshness p95 {figures['freshness_p95_s']} s (target <= {TARGET_FRESHNESS_P95_S})"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes", default="paper,compact", help="Model sizes to measure; the first gives the headline keys."
    )
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--seconds", type=float, default=8.0, help="Measured time per cell.")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--fresh-items", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    unknown = set(args.sizes.split(",")) - set(RANKER_SIZES)
    if unknown:
        parser.error(f"unknown sizes {sorted(unknown)}; choose from {sorted(RANKER_SIZES)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    host = machine()
    root = Path(tempfile.mkdtemp(prefix="reaseq-bench-serving-"))
    broker = EmbeddedBroker(log_path=root / "broker.log")
    worker = None
    try:
        with console.status("starting broker and worker, streaming a generated world"):
            broker.start()
            settings = Settings(
                kafka_bootstrap=broker.bootstrap,
                state_dir=root / "state",
                topic_prefix=f"bench-{uuid.uuid4().hex[:8]}.",
            )
            provision(settings, broker.bootstrap, generation=1)
            worker = spawn_worker(settings, broker.bootstrap, 1, "bench")
            world = generate(
                args.items, args.users, args.events, seed=args.seed, start=datetime(2026, 1, 1, tzinfo=UTC)
            )
            out = producer(broker.bootstrap)
            for item in world.items:
                out.produce(topic_name(settings, ITEMS), key=item.item_id.encode(), value=encode(item))
            for event in world.interactions:
                out.produce(topic_name(settings, EVENTS), key=event.user_id.encode(), value=encode(event))
            out.flush(60)
            wait_for_users(settings, broker.bootstrap, len({i.user_id for i in world.interactions}))
        sizes = {
            name: measure_size(name, settings, broker.bootstrap, world, args, root) for name in args.sizes.split(",")
        }
    finally:
        if worker is not None:
            stop_process(worker.pid)
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "benchmark": "serving",
        "date": date.today().isoformat(),
        "machine": host,
        "world": {"items": args.items, "users": args.users, "events": args.events},
        "seconds_per_cell": args.seconds,
        "targets": {
            "triton_p99_ms_c8_candidates100": TARGET_P99_MS_C8,
            "triton_over_inprocess_throughput_c8_candidates100": TARGET_TRITON_OVER_INPROCESS,
            "freshness_p95_s": TARGET_FRESHNESS_P95_S,
        },
        **summary(sizes, args.sizes.split(",")[0]),
        "sizes": sizes,
    }
    report(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"written to {args.output}")


def wait_for_users(settings: Settings, bootstrap: str, users: int, timeout_s: float = 600.0) -> None:
    """Block until the worker has published a history for every user (the replicas bootstrap from those)."""
    from confluent_kafka import Consumer, TopicPartition

    topic = topic_name(settings, USER_FEATURES)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-serving", "enable.auto.commit": False, "log_level": 0}
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    seen: set[bytes] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < users:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(seen)} of {users} user histories after {timeout_s:.0f} s")
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is None and message.key():
                    seen.add(message.key())
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
