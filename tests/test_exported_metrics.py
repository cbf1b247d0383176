"""Each worker process exports Prometheus metrics counting exactly what it handled: a real stream worker and a real
enrichment worker, found through their port files and scraped over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.processes import spawn_async_worker, stop_process
from infra.synthetic import generate
from reaseq.contracts import Interaction, InteractionKind
from reaseq.metrics import exporter_dir, exporters, serve_metrics
from reaseq.settings import Settings
from reaseq.topics import DEAD_LETTERS, ENRICHMENT_REQUESTS, EVENTS, ITEMS, KNOWLEDGE, topic_name
from tests.conftest import Spawn
from tests.support import TopicReader, send, send_contracts

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
OURS = (
    "reaseq_events_processed_total",
    "reaseq_dead_letters_total",
    "reaseq_queue_depth",
    "reaseq_enrichment_latency_seconds_count",
)


def sample(name: str, value: float, **labels: str) -> Samples:
    return {(name, frozenset(labels.items())): value}


def scrape(url: str) -> Samples:
    """This project's samples at ``url`` (process and Python collectors left out)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in OURS
    }


def scrape_until(url: str, expected: Samples, timeout_s: float = 30.0) -> Samples:
    """Counters follow the records they count by moments, and the gauges are sampled: poll until they agree."""
    deadline = time.monotonic() + timeout_s
    while (seen := scrape(url)) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return seen


def test_workers_export_exact_counts_dead_letters_latency_and_queue_depths(settings: Settings, workers: Spawn) -> None:
    bootstrap = settings.kafka_bootstrap
    assert bootstrap
    world = generate(n_items=8, n_users=4, n_events=30, seed=11)
    start = world.interactions[-1].event_time
    orphans = [  # their item never arrives: they wait in the pending table
        Interaction(
            user_id="user-orphan",
            item_id="item-unknown",
            kind=InteractionKind.VIEW,
            event_time=start + timedelta(seconds=i),
        )
        for i in range(3)
    ]
    bad_items = [orjson.dumps({"schema_version": 1, "item_id": "no-title"})]
    good_event = orjson.loads(orphans[0].model_dump_json())
    bad_events = [b"{not json", b"[1, 2", orjson.dumps({**good_event, "schema_version": 99})]

    workers("w0")
    enrichment = spawn_async_worker(settings, bootstrap, "enrich")
    try:
        send_contracts(bootstrap, topic_name(settings, ITEMS), world.items, lambda m: m.item_id)  # type: ignore[attr-defined]
        send(bootstrap, topic_name(settings, ITEMS), [(b"no-title", raw) for raw in bad_items])
        send_contracts(bootstrap, topic_name(settings, EVENTS), world.interactions + orphans, lambda m: m.user_id)  # type: ignore[attr-defined]
        send(bootstrap, topic_name(settings, EVENTS), [(b"bad", raw) for raw in bad_events])
        send(bootstrap, topic_name(settings, ENRICHMENT_REQUESTS), [(b"broken", b"{not json")])
        TopicReader(bootstrap, topic_name(settings, KNOWLEDGE)).wait_for(
            lambda rs: len({r.key for r in rs}) == len(world.items), timeout_s=90
        )
        TopicReader(bootstrap, topic_name(settings, DEAD_LETTERS)).wait_for(lambda rs: len(rs) == 5)

        urls = exporters(settings)
        assert set(urls) == {"w0.g1", "enrich"}
        items, events = len(world.items), len(world.interactions)
        processed = "reaseq_events_processed_total"
        stream = {
            **sample(processed, items + len(bad_items), agent="ingest-items"),
            **sample(processed, events + len(orphans) + len(bad_events), agent="ingest-events"),
            **sample(processed, items + events + len(orphans), agent="catalog"),
            **sample(processed, events, agent="histories"),
            **sample("reaseq_dead_letters_total", 1, agent="ingest-items", reason="invalid"),
            **sample("reaseq_dead_letters_total", 2, agent="ingest-events", reason="malformed-json"),
            **sample("reaseq_dead_letters_total", 1, agent="ingest-events", reason="unknown-schema-version"),
            **sample("reaseq_queue_depth", len(orphans), queue="pending"),
            **sample("reaseq_queue_depth", 0, queue="interest-debounce"),
            **sample("reaseq_enrichment_latency_seconds_count", 0),  # every process defines every metric
        }
        assert scrape_until(urls["w0.g1"], stream) == stream
        enrich = {
            **sample(processed, items + 1, agent="enrichment"),
            **sample("reaseq_dead_letters_total", 1, agent="enrichment", reason="malformed-json"),
            **sample("reaseq_enrichment_latency_seconds_count", items),
            **sample("reaseq_queue_depth", 0, queue="enrichment-requests"),
        }
        assert scrape_until(urls["enrich"], enrich) == enrich
    finally:
        stop_process(enrichment.pid, timeout_s=20)
    assert set(exporters(settings)) == {"w0.g1"}  # a cleanly stopped process takes its port file with it


def test_an_exporter_killed_without_a_clean_exit_or_an_unreadable_port_file_is_not_listed(tmp_path: Path) -> None:
    settings = Settings().model_copy(update={"state_dir": tmp_path, "metrics_port": None})
    kill_after_serving = (
        "import os, signal; from reaseq.metrics import serve_metrics; from reaseq.settings import Settings; "
        "serve_metrics(Settings(), 'killed'); os.kill(os.getpid(), signal.SIGKILL)"
    )
    env = {**{k: v for k, v in os.environ.items() if k != "REASEQ_METRICS_PORT"}, "REASEQ_STATE_DIR": str(tmp_path)}
    assert (
        subprocess.run([sys.executable, "-c", kill_after_serving], env=env, check=False).returncode == -signal.SIGKILL
    )
    assert (exporter_dir(settings) / "killed.port").is_file()  # no exit handler ran
    (exporter_dir(settings) / "earlier.port").write_text("9100")  # an earlier release's bare port, no pid
    serve_metrics(settings, "alive")
    assert set(exporters(settings)) == {"alive"}
