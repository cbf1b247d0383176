"""The load test: 100,000 good interactions among 10,000 fuzzed bad records, through a consumer group of two stream
workers, every record accounted for exactly (the scenario ``python -m benchmarks.load`` measures)."""

from __future__ import annotations

import subprocess

import pytest

from reaseq.settings import Settings
from tests.conftest import Spawn
from tests.support.fuzz import LOAD_LIMITS, load_mix, run_mix

pytestmark = pytest.mark.integration

LOAD_WORKERS = 2
LOAD_TIMEOUT_S = 480.0  # per phase; one worker alone has done it in 151 s on a busy 2-core machine


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The conftest's isolated deployment with the load scenario's limits (workers inherit them)."""
    return settings.model_copy(update=LOAD_LIMITS)


@pytest.mark.timeout(2 * LOAD_TIMEOUT_S)
def test_a_hundred_thousand_events_among_ten_thousand_bad_ones_are_each_accounted_for_once(
    settings: Settings, workers: Spawn
) -> None:
    assert settings.kafka_bootstrap
    mix = load_mix(settings)
    started: list[subprocess.Popen[bytes]] = []
    run = run_mix(
        settings,
        settings.kafka_bootstrap,
        mix,
        lambda name: started.append(workers(name)),
        LOAD_WORKERS,
        LOAD_TIMEOUT_S,
    )
    result = run.report()
    print(
        f"{result['published']['records']:,} records: {result['applied']:,} applied, "
        f"dead letters {result['dead_letters']}, {result['held_pending']} held; "
        f"{result['events_per_s']:,} events/s end to end, {result['updates_per_s']:,} updates/s"
    )
    assert result["problems"] == []
    # The 10,000 fuzzed records, and both copies of each of the 500 interactions the pending table does not keep.
    assert sum(mix.bad.values()) == 10_000 and sum(run.tally.dead_letters.values()) == 10_000 + 2 * 500
    # Without a fault nothing is re-run: each output record was emitted once.
    assert result["re_emitted_identical_updates"] == 0 and result["re_emitted_dead_letters"] == 0
    assert all(process.poll() is None for process in started)
