"""What the command modules share: the console, finding the broker and Triton, and failing with one red line."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import NoReturn

import typer
from rich.console import Console

from infra.stack import StackError, resolve_bootstrap
from kafka_adapter.clients import (
    BrokerError,
    await_kafka,
    broker_replaced,
    cluster_id,
    wait_until_answers,
    watch_cluster,
)
from reaseq.runfiles import TritonEndpoints, load_run_state, triton_endpoints
from reaseq.settings import get_settings

log = logging.getLogger(__name__)
console = Console()
BROKER_ANSWER_S = 5.0  # one-shot commands give up on an unreachable broker after this long
EXIT_BROKER_REPLACED = 3  # a worker's exit code once its broker is another cluster: its topics are gone


def fail(message: object, code: int = 2) -> NoReturn:
    """Say what is wrong in one red line and exit with ``code``."""
    console.print(f"[red]{message}[/red]")
    raise typer.Exit(code)


def bootstrap() -> str:
    """The broker: KAFKA_BOOTSTRAP, else the local stack's."""
    try:
        return resolve_bootstrap(get_settings())
    except StackError as exc:
        fail(exc)


def answering_bootstrap() -> str:
    """The broker, for one-shot commands: exit with a clear message if it does not answer within BROKER_ANSWER_S."""
    found = bootstrap()
    try:
        wait_until_answers(found, BROKER_ANSWER_S)
    except BrokerError as exc:
        fail(exc)
    return found


def same_broker(bootstrap: str, code: int = EXIT_BROKER_REPLACED, cluster: str | None = None) -> str:
    """The cluster id at ``bootstrap`` (``cluster`` where the caller has just read it); exit with ``code``, saying what
    to do, where the local stack started with another cluster there (a restarted embedded broker, whose topics are
    gone)."""
    found = cluster_id(bootstrap) if cluster is None else cluster
    state = load_run_state(get_settings())
    if state is not None and state.cluster_id and state.bootstrap == bootstrap and found != state.cluster_id:
        fail(broker_replaced(bootstrap, state.cluster_id, found), code)
    return found


def _stop_on_replaced(message: str) -> None:
    log.error(message)
    # at once: the state this process holds was built from topics that no longer exist
    os._exit(EXIT_BROKER_REPLACED)


def awaited_bootstrap(topics: Sequence[str] = ()) -> str:
    """The broker, for long-running workers: wait, logging why, until it answers and ``topics`` exist; refuse a
    broker that replaced the local stack's, and stop (exit 3, saying why) if it is replaced while the worker runs."""
    found = bootstrap()
    # the broker first, then its topics: a replaced broker has none, and waiting for them would hide why
    started_with = same_broker(found, cluster=await_kafka(found))
    await_kafka(found, topics)
    watch_cluster(found, started_with, _stop_on_replaced)
    return found


def served_endpoints() -> TritonEndpoints:
    """Triton's endpoints (the local stack's, or those the settings name), or exit saying how to start it."""
    endpoints = triton_endpoints(get_settings())
    if endpoints is None:
        fail("Triton is not running: `reaseq up` starts it once a ranker is trained (or name one with REASEQ_TRITON_*)")
    return endpoints
