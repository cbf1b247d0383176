"""Prometheus metrics of the stream workers and the asynchronous workers, and each process's exporter.

Every worker process serves its own ``/metrics`` (``serve_metrics``) and writes the port it bound to
``<state_dir>/run/metrics/<process>.port``, so that several processes share a machine without fixed ports and
operators, ``reaseq status`` and the dashboard find them all (``exporters``).
"""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from pydantic import BaseModel, ValidationError

from reaseq.runfiles import pid_alive, run_dir
from reaseq.settings import Settings

log = logging.getLogger(__name__)

# Seconds: an embedded reasoner answers in well under a second, an LLM server may take minutes.
_SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

EVENTS_PROCESSED = Counter(
    "reaseq_events_processed", "Records an agent or worker has handled, dead-lettered ones included.", ["agent"]
)
DEAD_LETTERED = Counter("reaseq_dead_letters", "Records sent to the dead-letter topic.", ["agent", "reason"])
REQUESTS_SKIPPED = Counter(
    "reaseq_requests_skipped",
    "Requests whose result is already published (same item content, or same history version and model).",
    ["agent"],
)
LLM_UNAVAILABLE = Counter(
    "reaseq_llm_unavailable",
    "Reasoning attempts that found the LLM server down (held by the circuit breaker, retried).",
)
ENRICHMENT_LATENCY = Histogram(
    "reaseq_enrichment_latency_seconds",
    "Per item, from its enrichment request to its published knowledge.",
    buckets=_SLOW_BUCKETS,
)
INTEREST_LATENCY = Histogram(
    "reaseq_interest_latency_seconds",
    "Per user, from the interest request to the published interests.",
    buckets=_SLOW_BUCKETS,
)
INTEREST_INFERENCE = Histogram(
    "reaseq_interest_inference_seconds",
    "One batch's inference: beyond-log items and, when the version has a pattern, reasoning steps.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
QUEUE_DEPTH = Gauge(
    "reaseq_queue_depth",
    "Work waiting in this process: pending (interactions whose item is unknown), interest-debounce (users whose "
    "interest request waits for quiet time), and a request topic's consumer lag (enrichment-requests, interest-requests).",
    ["queue"],
)
ENRICHMENT_IN_FLIGHT = Gauge(
    "reaseq_enrichment_in_flight", "Items being reasoned about (held while the LLM server is down)."
)


class ExporterRecord(BaseModel):
    """What a port file holds: the exporter's port and the pid of the process serving it."""

    port: int
    pid: int


def exporter_dir(settings: Settings) -> Path:
    """Where each running exporter's port file lies."""
    return run_dir(settings) / "metrics"


def serve_metrics(settings: Settings, process: str) -> int | None:
    """Serve ``/metrics`` for this process and record its port as ``<process>.port``; None when disabled.

    The port file (port and pid) is removed at a clean exit; one left by a killed process is ignored by
    ``exporters`` and replaced when the name starts again.
    """
    if settings.metrics_port == 0:
        return None
    server, _ = start_http_server(settings.metrics_port or 0, addr=settings.metrics_host)
    port = int(server.server_port)
    path = exporter_dir(settings) / f"{process}.port"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = ExporterRecord(port=port, pid=os.getpid()).model_dump_json()
    staged = path.with_suffix(".tmp")
    staged.write_text(record)
    staged.replace(path)  # readers never see a half-written file
    atexit.register(_release, path, record)
    log.info("metrics exporter started", extra={"exporter": process, "host": settings.metrics_host, "port": port})
    return port


def _release(path: Path, record: str) -> None:
    # A process of the same name started since owns the file now.
    if path.is_file() and path.read_text() == record:
        path.unlink(missing_ok=True)


def exporters(settings: Settings) -> dict[str, str]:
    """The running exporters on this machine: process name (``w0.g1``, ``enrich``, ``interests``) -> metrics URL.

    A process killed without a clean exit leaves its file behind; the file names its pid, so it is skipped.
    """
    host = "127.0.0.1" if settings.metrics_host in ("", "0.0.0.0") else settings.metrics_host
    found: dict[str, str] = {}
    for path in sorted(exporter_dir(settings).glob("*.port")):
        try:
            record = ExporterRecord.model_validate_json(path.read_text())
        except FileNotFoundError:  # its process stopped since the listing
            continue
        except ValidationError:  # e.g. the bare port an earlier release wrote: no pid to check, so no owner
            log.warning("port file without an exporter record skipped", extra={"path": str(path)})
            continue
        if pid_alive(record.pid):
            found[path.stem] = f"http://{host}:{record.port}/metrics"
    return found
