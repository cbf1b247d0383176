"""What the command modules share: the console, finding the broker and Triton, and failing with one red line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

import typer
from rich.console import Console

from infra.stack import StackError, resolve_bootstrap
from kafka_adapter.clients import BrokerError, await_kafka, wait_until_answers
from reaseq.runfiles import TritonEndpoints, triton_endpoints
from reaseq.settings import get_settings

console = Console()
BROKER_ANSWER_S = 5.0  # one-shot commands give up on an unreachable broker after this long


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


def awaited_bootstrap(topics: Sequence[str] = ()) -> str:
    """The broker, for long-running workers: wait, logging why, until it answers and ``topics`` exist."""
    found = bootstrap()
    await_kafka(found, topics)
    return found


def served_endpoints() -> TritonEndpoints:
    """Triton's endpoints (the local stack's, or those the settings name), or exit saying how to start it."""
    endpoints = triton_endpoints(get_settings())
    if endpoints is None:
        fail("Triton is not running: `reaseq up` starts it once a ranker is trained (or name one with REASEQ_TRITON_*)")
    return endpoints
