"""The embedded broker restarted under a running deployment: it keeps topics in memory, so the new one has none.
The workers and `reaseq status` say so and what to do, instead of running on against empty topics."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from infra.broker import EmbeddedBroker
from infra.cli.common import EXIT_BROKER_REPLACED
from infra.processes import spawn_async_worker, spawn_worker, stop_process, worker_env
from infra.stack import clear_topic_stores, topic_stores
from infra.synthetic import generate
from kafka_adapter.clients import admin
from kafka_adapter.provision import provision
from reaseq.runfiles import RunState, run_dir, save_run_state
from reaseq.settings import Settings
from reaseq.topics import EVENTS, ITEMS, KNOWLEDGE, topic_name
from tests.support import TopicReader, send_contracts

pytestmark = pytest.mark.integration

GONE = "its topics, and the state built from them, are gone"


def exit_code(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_process(process.pid, timeout_s=15)
        raise AssertionError(
            f"pid {process.pid} still running {timeout_s:.0f} s after the broker was replaced"
        ) from None


def test_workers_and_status_say_the_topics_are_gone(tmp_path: Path) -> None:
    first = EmbeddedBroker(log_path=tmp_path / "first.log").start()
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=first.bootstrap, topic_prefix=f"t{tag}.", app_id=f"reaseq-{tag}", state_dir=tmp_path / "state"
    )
    bootstrap = first.bootstrap
    provision(settings, bootstrap, 1)
    save_run_state(settings, RunState(bootstrap=bootstrap, cluster_id=first.cluster_id))  # as `reaseq up` records it
    worker = spawn_worker(settings, bootstrap, 1, "w0")
    enrichment = spawn_async_worker(settings, bootstrap, "enrich")
    second: EmbeddedBroker | None = None
    try:
        items = generate(10, 2, 4, seed=3).items[:2]
        send_contracts(bootstrap, topic_name(settings, ITEMS), items, lambda m: m.item_id)  # type: ignore[attr-defined]
        knowledge = TopicReader(bootstrap, topic_name(settings, KNOWLEDGE))
        knowledge.wait_for(lambda records: len(records) == 2, timeout_s=180)  # both workers at work
        knowledge.close()

        first.stop()
        second = EmbeddedBroker(port=first.port, log_path=tmp_path / "second.log").start()
        replaced = time.monotonic()
        for process, log in ((worker, "w0.g1"), (enrichment, "enrich")):
            assert exit_code(process, timeout_s=60) == EXIT_BROKER_REPLACED
            assert GONE in (run_dir(settings) / f"{log}.log").read_text()
        print(f"both workers stopped {time.monotonic() - replaced:.1f} s after the broker was replaced")

        status = subprocess.run(
            [sys.executable, "-m", "infra.cli", "status"],
            env=worker_env(settings, bootstrap),
            capture_output=True,
            text=True,
            timeout=120,
        )
        said = " ".join(status.stdout.split())  # the console wraps long lines
        assert status.returncode == 1 and GONE in said and "`reaseq down`, then `reaseq up`" in said, status.stdout

        # restarted as the supervisor would: it refuses, rather than provisioning empty topics and running on them
        again = spawn_worker(settings, bootstrap, 1, "w0-again")
        assert exit_code(again, timeout_s=60) == EXIT_BROKER_REPLACED
        assert topic_name(settings, EVENTS) not in admin(bootstrap).list_topics(timeout=10).topics
    finally:
        for process in (worker, enrichment):
            stop_process(process.pid, timeout_s=15)
        (second or first).stop()


def test_a_new_embedded_broker_starts_with_empty_stores(tmp_path: Path) -> None:
    """`reaseq up` starts an empty embedded broker: the stores built from the last one's topics go, the rest stays."""
    settings = Settings(state_dir=tmp_path)
    for store in topic_stores(settings):
        (store / "data").mkdir(parents=True)
    kept = [tmp_path / "enrichment" / "encoder-cache", tmp_path / "triton" / "repository", tmp_path / "run"]
    for folder in kept:
        folder.mkdir(parents=True)
    clear_topic_stores(settings)
    assert not any(store.exists() for store in topic_stores(settings))
    assert all(folder.exists() for folder in kept)
