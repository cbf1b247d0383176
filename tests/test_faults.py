"""Worker faults under load with fuzzed bad input: SIGKILL mid-stream, and a consumer group of two that loses a
member. Each input must be reflected exactly once: applied to its user's history or dead-lettered for its reason."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta

from infra.processes import spawn_async_worker, stop_process
from reaseq.contracts import KnowledgeResult
from reaseq.settings import Settings
from reaseq.topics import EVENTS, ITEMS, KNOWLEDGE, topic_name
from streams.app import worker_datadir
from tests.conftest import Spawn
from tests.support import TopicReader
from tests.support.fuzz import BAD_KINDS, EPOCH, GENERATION, Mix, Tally, assigned, fuzzed_mix, publish, wait_for

SIGKILL_EVENTS = 20_000
KILL_AT = 0.3  # share of the events applied when the worker is killed


def publish_mix(settings: Settings, mix: Mix) -> None:
    assert settings.kafka_bootstrap
    publish(settings.kafka_bootstrap, topic_name(settings, ITEMS), mix.items)
    publish(settings.kafka_bootstrap, topic_name(settings, EVENTS), mix.events)


def test_sigkill_mid_load_then_restart_applies_every_event_once(settings: Settings, workers: Spawn) -> None:
    assert settings.kafka_bootstrap
    # No never-published item here: an overflowing interaction re-routed after the crash would be a new source record.
    mix = fuzzed_mix(settings, good=SIGKILL_EVENTS, bad=1000, seed=11, users=400, items=200, resent=200)
    publish_mix(settings, mix)
    tally = Tally(settings, settings.kafka_bootstrap)
    try:
        victim = workers("w0")
        tally.wait(lambda t: t.applied >= KILL_AT * SIGKILL_EVENTS, 180, "the first events applied")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        tally.poll()
        applied_at_kill = tally.applied
        assert applied_at_kill < SIGKILL_EVENTS, "killed too late to test anything"
        restarted = time.monotonic()
        workers("w0")  # same name: its folder, left by a killed run, is rebuilt from the changelogs
        tally.complete(mix, timeout_s=300)
        print(
            f"killed at {applied_at_kill} of {SIGKILL_EVENTS} events applied; restart -> full account in "
            f"{time.monotonic() - restarted:.1f}s; re-emitted identical: {tally.repeated_updates} updates, "
            f"{tally.repeated_dead_letters} dead letters"
        )
        assert tally.problems(mix) == []
    finally:
        tally.close()


def test_two_workers_split_partitions_and_survive_one_leaving(settings: Settings, workers: Spawn) -> None:
    assert settings.kafka_bootstrap
    events = topic_name(settings, EVENTS)
    first, second = workers("w0"), workers("w1")
    # The second member may join well after the first: only once both own partitions is the work split.
    wait_for(lambda: all(assigned(settings, name, events) for name in ("w0", "w1")), 120, "both workers assigned")
    before = fuzzed_mix(settings, good=1000, bad=50, seed=12, users=40, items=60, orphans=20)
    publish_mix(settings, before)
    tally = Tally(settings, settings.kafka_bootstrap)
    try:
        tally.complete(before, timeout_s=120)
        assert tally.problems(before) == []
        for name in ("w0", "w1"):  # still split: no member left or joined meanwhile
            assert assigned(settings, name, events), name
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
        after = fuzzed_mix(
            settings, good=1000, bad=50, seed=13, users=40, items=60, orphans=20, start=EPOCH + timedelta(days=30)
        )
        publish_mix(settings, after)
        tally.complete(before + after, timeout_s=120)
        assert first.poll() is None
        assert tally.problems(before + after) == []
    finally:
        tally.close()


def test_a_lost_rocksdb_folder_is_rebuilt_from_the_changelogs(settings: Settings, workers: Spawn) -> None:
    """The worker's local folder deleted while it is down: its tables come back from their changelog topics, so the
    next events extend the same histories (versions go on from where they were) and find the same items."""
    assert settings.kafka_bootstrap
    before = fuzzed_mix(settings, good=2000, bad=100, seed=21, users=60, items=80, orphans=10)
    event_kinds = [kind for kind in BAD_KINDS if kind.topic == EVENTS.name]
    after = fuzzed_mix(
        settings,
        good=2000,
        bad=100,
        seed=22,
        users=60,
        items=80,
        orphans=10,
        kinds=event_kinds,
        start=EPOCH + timedelta(days=30),
    )
    publish_mix(settings, before)
    tally = Tally(settings, settings.kafka_bootstrap)
    try:
        worker = workers("w0")
        tally.complete(before, timeout_s=180)
        assert tally.problems(before) == []
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        folder = worker_datadir(settings, GENERATION, "w0")
        assert any(folder.iterdir()), "no local state to lose"
        shutil.rmtree(folder)
        # Only the events (on the same item ids): had the items table not come back, they would wait for their items.
        publish(settings.kafka_bootstrap, topic_name(settings, EVENTS), after.events)
        restarted = time.monotonic()
        workers("w0")
        expected = replace(before + after, items=[], item_ids=before.item_ids)
        tally.complete(expected, timeout_s=300)
        print(f"folder lost -> full account in {time.monotonic() - restarted:.1f}s")
        assert tally.problems(expected) == []
    finally:
        tally.close()


def test_a_stream_worker_and_the_enrichment_worker_killed_together_lose_nothing(
    settings: Settings, workers: Spawn
) -> None:
    """Both SIGKILLed at once under load, then restarted: every event applied or dead-lettered once, and every item
    enriched once for its content (a request re-sent by the re-run stream is skipped, not reasoned again)."""
    bootstrap = settings.kafka_bootstrap
    assert bootstrap
    mix = fuzzed_mix(settings, good=10_000, bad=500, seed=23, users=300, items=150, resent=100)
    publish_mix(settings, mix)
    tally = Tally(settings, bootstrap)
    knowledge = TopicReader(bootstrap, topic_name(settings, KNOWLEDGE))
    try:
        stream, enrichment = workers("w0"), spawn_async_worker(settings, bootstrap, "enrich")
        knowledge.wait_for(lambda records: len(records) >= 10, timeout_s=180)  # enrichment is under way
        tally.wait(lambda t: t.applied >= KILL_AT * 10_000, 180, "the first events applied")
        for victim in (stream, enrichment):
            os.kill(victim.pid, signal.SIGKILL)
        for victim in (stream, enrichment):
            victim.wait()
        tally.poll()
        assert tally.applied < 10_000, "killed too late to test anything"
        enriched_at_kill = len(knowledge.records)
        workers("w0")
        enrichment = spawn_async_worker(settings, bootstrap, "enrich")
        tally.complete(mix, timeout_s=300)
        assert tally.problems(mix) == []
        records = knowledge.wait_for(lambda rs: len({r.key for r in rs}) == len(mix.item_ids), timeout_s=300)
        time.sleep(3.0)  # anything enriched twice would arrive by now
        records = knowledge.poll(1.0)
        per_content = Counter(
            (r.key, KnowledgeResult.model_validate_json(r.value or b"").content_hash) for r in records
        )
        print(f"killed with {enriched_at_kill} of {len(mix.item_ids)} items enriched")
        assert {key.decode() for key, _ in per_content if key} == mix.item_ids
        assert [entry for entry, count in per_content.items() if count > 1] == []
    finally:
        stop_process(enrichment.pid, timeout_s=20)
        knowledge.close()
        tally.close()
