"""Commands that run one process of the system in the foreground (what the supervisor and containers start)."""

from __future__ import annotations

from typing import Annotated

import typer

from infra.cli.common import awaited_bootstrap, bootstrap, console, fail
from infra.ports import free_port
from infra.supervisor import run_supervisor
from infra.triton import TritonError, exec_triton
from kafka_adapter.control import active_generation
from kafka_adapter.provision import shared_topics
from reaseq.logs import configure
from reaseq.settings import get_settings


def worker(
    generation: Annotated[int | None, typer.Option(help="State generation; default: the serving one.")] = None,
    name: Annotated[str, typer.Option(help="Worker name; names its local RocksDB folder.")] = "w0",
) -> None:
    """Run one stream worker (Faust) in the foreground."""
    from streams.worker import run_worker  # deferred: loads Faust

    settings = get_settings()
    configure(settings.log_level)
    found = awaited_bootstrap()  # the worker provisions its topics itself
    run_worker(settings, found, generation or active_generation(settings, found), name)


def enrich() -> None:
    """Run one enrichment worker in the foreground (item knowledge from the configured reasoner)."""
    from workers.enrichment import run_enrichment  # deferred: loads torch

    settings = get_settings()
    configure(settings.log_level)
    run_enrichment(settings, awaited_bootstrap(shared_topics(settings)))


def interests() -> None:
    """Run one interest worker in the foreground (beyond-log interests from the served version's interest model, else the newest)."""
    from workers.interests import run_interests  # deferred: loads torch

    settings = get_settings()
    configure(settings.log_level)
    run_interests(settings, awaited_bootstrap(shared_topics(settings)))


def ids() -> None:
    """Run the semantic-ID writer in the foreground: one ID per version for each item published after training
    (one per deployment; every Triton replica reads them)."""
    from workers.item_ids import run_id_writer  # deferred: loads torch

    settings = get_settings()
    configure(settings.log_level)
    run_id_writer(settings, awaited_bootstrap(shared_topics(settings)))


def supervise() -> None:
    """Run the local stack's supervisor in the foreground (`reaseq up` starts it detached)."""
    settings = get_settings()
    configure(settings.log_level)
    run_supervisor(settings, bootstrap())


def serve() -> None:
    """Run Triton in the foreground with the newest ranker version (containers; `reaseq up` runs it detached);
    with no trained version yet, wait for one."""
    settings = get_settings()
    configure(settings.log_level)
    try:
        exec_triton(settings, bootstrap())
    except TritonError as exc:
        fail(exc)


def web(
    host: Annotated[
        str | None,
        typer.Option(help="Address to bind (default: REASEQ_WEB_HOST); beyond loopback it needs REASEQ_WEB_TOKEN."),
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Default: REASEQ_WEB_PORT; unset there: a free one.")
    ] = None,
) -> None:
    """Serve the operator web page: pipeline health and throughput, recent enriched items, a user lookup."""
    from dashboard.server import ExposedWithoutToken, check_exposure, run_dashboard  # deferred: loads aiohttp

    settings = get_settings()
    configure(settings.log_level)
    host = host or settings.web_host
    try:
        check_exposure(host, settings)
    except ExposedWithoutToken as exc:
        fail(exc)
    found = bootstrap()
    port = port or settings.web_port or free_port()
    console.print(f"operator page: http://{host}:{port}/" + ("?token=…" if settings.web_token else ""))
    run_dashboard(settings, found, host, port)


def register(app: typer.Typer) -> None:
    for command in (worker, enrich, interests, ids, serve, web):
        app.command()(command)
    app.command(hidden=True)(supervise)
