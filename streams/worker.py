"""Runs one Faust stream worker of a state generation."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import faust

from kafka_adapter.clients import is_tansu
from kafka_adapter.provision import provision
from reaseq.logs import configure
from reaseq.metrics import serve_metrics
from reaseq.settings import Settings
from streams.app import worker_datadir
from streams.topology import build_app

log = logging.getLogger(__name__)

RUNNING = ".running"  # in the worker's folder while it runs; found at a start, the last run was killed


def trusted_folder(datadir: Path) -> Path:
    """The worker's local folder, emptied first if its last run was killed; the marker of this run set.

    Faust writes a table's RocksDB at once, but its changelog (like the agents' outputs, sent before it) through the
    producer's buffer. A killed worker's store can so hold writes whose outputs never left: a re-run record would find
    itself applied and skip them. The changelogs are never ahead of the outputs, so the tables are rebuilt from them.
    """
    marker = datadir / RUNNING
    if marker.exists():
        log.warning(
            "the worker's last run did not stop: rebuilding its tables from their changelogs",
            extra={"folder": str(datadir)},
        )
        shutil.rmtree(datadir)
    datadir.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return marker


def run_worker(settings: Settings, bootstrap: str, generation: int, name: str) -> None:
    """Provision topics (idempotent) and run a worker until it is signalled to stop."""
    configure(settings.log_level)
    provision(settings, bootstrap, generation)
    running = trusted_folder(worker_datadir(settings, generation, name))
    stream_app = build_app(settings, bootstrap, generation, name, is_tansu(bootstrap))
    serve_metrics(settings, f"{name}.g{generation}")
    worker = faust.Worker(
        stream_app.app,
        loglevel=settings.log_level.lower().replace("warning", "warn"),
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    try:
        worker.execute_from_commandline()
    finally:  # stopped, flushed and committed: the store is the changelogs' and the outputs'
        running.unlink(missing_ok=True)
