"""Runs one Faust stream worker of a state generation."""

from __future__ import annotations

import faust

from kafka_adapter.clients import is_tansu
from kafka_adapter.provision import provision
from reaseq.logs import configure
from reaseq.metrics import serve_metrics
from reaseq.settings import Settings
from streams.topology import build_app


def run_worker(settings: Settings, bootstrap: str, generation: int, name: str) -> None:
    """Provision topics (idempotent) and run a worker until it is signalled to stop."""
    configure(settings.log_level)
    provision(settings, bootstrap, generation)
    stream_app = build_app(settings, bootstrap, generation, name, is_tansu(bootstrap))
    serve_metrics(settings, f"{name}.g{generation}")
    worker = faust.Worker(
        stream_app.app,
        loglevel=settings.log_level.lower().replace("warning", "warn"),
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    worker.execute_from_commandline()
