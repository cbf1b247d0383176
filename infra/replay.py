"""Replay: rebuild every state store from the source topics into a new state generation.

The new generation has its own consumer group, internal topics, changelogs and RocksDB folders, so the
serving generation keeps running untouched. Once the new one has caught up, the control topic names it
as serving and the old generation's local workers are stopped. Its topics are kept for a rollback.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from infra.processes import spawn_worker, stop_process, worker_args
from infra.stack import supervised_pids
from kafka_adapter.control import active_generation, write_generation
from kafka_adapter.offsets import commit_offsets_at, group_lag
from kafka_adapter.provision import delete_topics, generation_topics, provision
from reaseq.runfiles import ComponentSpec, WorkerProcess, load_run_state, save_run_state, want
from reaseq.settings import Settings
from reaseq.topics import BY_ITEM, BY_USER, EVENTS, ITEMS, topic_name
from streams.app import worker_datadir


def _discard_generation(settings: Settings, bootstrap: str, generation: int) -> None:
    """Remove what an aborted earlier replay into ``generation`` left behind."""
    delete_topics(bootstrap, generation_topics(settings, generation))
    shutil.rmtree(worker_datadir(settings, generation, "x").parent, ignore_errors=True)


def _start_from(settings: Settings, bootstrap: str, group: str, when: datetime) -> None:
    """Start the new group's workers at the interactions of ``when``.

    Only interactions are cut at the time: the catalog is always rebuilt whole, since every interaction
    needs its item.
    """
    commit_offsets_at(bootstrap, group, [topic_name(settings, EVENTS)], when)


def wait_caught_up(
    settings: Settings, bootstrap: str, generation: int, console: Console, timeout_s: float = 3600.0
) -> None:
    """Show the new generation's progress until nothing is left to process on any of its inputs."""
    group = settings.app_name(generation)
    inputs = [topic_name(settings, spec, generation) for spec in (ITEMS, EVENTS, BY_ITEM, BY_USER)]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    deadline = time.monotonic() + timeout_s
    settled = 0
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"rebuilding generation {generation}", total=None)
        peak = 0
        while settled < 2:  # two clean reads in a row: committed offsets trail processing by a commit interval
            if time.monotonic() > deadline:
                raise TimeoutError(f"generation {generation} did not catch up within {timeout_s:.0f}s")
            remaining = sum(group_lag(bootstrap, group, inputs).values())
            peak = max(peak, remaining)
            progress.update(task, total=peak, completed=peak - remaining)
            settled = settled + 1 if remaining == 0 else 0
            time.sleep(1.0)


def run_replay(settings: Settings, bootstrap: str, from_time: datetime | None, workers: int, console: Console) -> int:
    """Build the next generation, wait until it caught up, switch serving to it; returns its number."""
    current = active_generation(settings, bootstrap)
    generation = current + 1
    _discard_generation(settings, bootstrap, generation)
    provision(settings, bootstrap, generation)
    if from_time is not None:
        _start_from(settings, bootstrap, settings.app_name(generation), from_time)
    state = load_run_state(settings)
    names = [f"w{i}" for i in range(workers)]
    if state is not None and state.supervisor_pid is not None:  # the local stack's supervisor runs them
        specs = [ComponentSpec(name=f"{name}.g{generation}", args=worker_args(generation, name)) for name in names]
        want(settings, add=specs)
        pids = supervised_pids(settings, [spec.name for spec in specs])
        started = [WorkerProcess(name, generation, pids[f"{name}.g{generation}"]) for name in names]

        def cancel() -> None:
            want(settings, remove=[spec.name for spec in specs])

    else:
        started = [
            WorkerProcess(name, generation, spawn_worker(settings, bootstrap, generation, name).pid) for name in names
        ]

        def cancel() -> None:
            for worker in started:
                stop_process(worker.pid)

    try:
        wait_caught_up(settings, bootstrap, generation, console)
    except BaseException:
        cancel()
        raise
    write_generation(settings, bootstrap, generation, int(from_time.timestamp() * 1000) if from_time else None)
    if state is not None:
        old = [w for w in state.workers if w.generation != generation]
        if state.supervisor_pid is not None:
            want(settings, remove=[f"{w.name}.g{w.generation}" for w in old])
        else:
            for worker in old:
                stop_process(worker.pid)
        state.workers = [w for w in state.workers if w.generation == generation] + started
        save_run_state(settings, state)
    return generation
