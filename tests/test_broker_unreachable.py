"""Started with the broker unreachable: long-running workers wait and say why, then process everything once it
answers, without a restart; one-shot commands fail at once with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from infra.broker import EmbeddedBroker
from infra.cli import BROKER_ANSWER_S
from infra.ports import free_port
from infra.processes import spawn_async_worker, spawn_worker, stop_process
from kafka_adapter.provision import provision
from reaseq.runfiles import log_tail, run_dir
from reaseq.settings import Settings
from reaseq.topics import EVENTS, ITEMS, KNOWLEDGE, topic_name
from tests.support import TopicReader
from tests.support.fuzz import Tally, fuzzed_mix, publish, wait_for

pytestmark = pytest.mark.integration

BROKER_DOWN_S = 15.0  # the workers run this long with nothing listening on the broker's port
UNREACHABLE = "Kafka not reachable; waiting for it"
REACHABLE = "Kafka reachable; starting"


def test_workers_started_before_the_broker_wait_then_process_everything(tmp_path: Path) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=bootstrap,
        topic_prefix=f"u{tag}.",
        app_id=f"reaseq-{tag}",
        state_dir=tmp_path / "state",
        log_level="INFO",
    )
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log")
    stream = spawn_worker(settings, bootstrap, 1, "w0")
    enrichment = spawn_async_worker(settings, bootstrap, "enrich")
    logs = [run_dir(settings) / "w0.g1.log", run_dir(settings) / "enrich.log"]
    try:
        wait_for(
            lambda: all(log_tail(log).count(UNREACHABLE) >= 2 for log in logs),
            60,
            "both workers log the broker as unreachable",
        )
        time.sleep(BROKER_DOWN_S)
        assert stream.poll() is None and enrichment.poll() is None, "a worker exited while the broker was unreachable"

        broker.start()
        came_up = time.monotonic()
        provision(settings, bootstrap, 1)
        mix = fuzzed_mix(settings, good=2000, bad=130, seed=21, users=100, items=40)
        publish(bootstrap, topic_name(settings, ITEMS), mix.items)
        publish(bootstrap, topic_name(settings, EVENTS), mix.events)
        tally = Tally(settings, bootstrap)
        try:
            tally.complete(mix, timeout_s=180)
            assert tally.problems(mix) == []
        finally:
            tally.close()
        knowledge = TopicReader(bootstrap, topic_name(settings, KNOWLEDGE))
        knowledge.wait_for(lambda rs: len({r.key for r in rs}) == len(mix.item_ids), timeout_s=180)
        print(f"broker up -> full account and every item enriched: {time.monotonic() - came_up:.1f}s")
        assert stream.poll() is None and enrichment.poll() is None  # the same processes, never restarted
        assert all(REACHABLE in log.read_text() for log in logs)
    finally:
        stop_process(enrichment.pid, timeout_s=20)
        stop_process(stream.pid, timeout_s=20)
        broker.stop()


@pytest.mark.parametrize("command", ["status", "publish"])
def test_one_shot_commands_fail_fast_with_a_clear_message(tmp_path: Path, command: str) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    events = tmp_path / "events.jsonl"
    events.write_text('{"schema_version": 1}\n')
    args = ["status"] if command == "status" else ["publish", "events", str(events)]
    env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "REASEQ_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "250"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", *args], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    took = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"Kafka at {bootstrap} did not answer within {BROKER_ANSWER_S:.0f}s" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert took < BROKER_ANSWER_S + 15, f"took {took:.1f}s"  # the rest is the interpreter starting
