"""`reaseq demo`: the whole system on a generated catalog and interaction stream."""

from __future__ import annotations

from typing import Annotated

import typer

from infra.cli.common import console
from reaseq.settings import get_settings


def demo(
    items: Annotated[int, typer.Option(min=1)] = 400,
    users: Annotated[int, typer.Option(min=1)] = 300,
    events: Annotated[int, typer.Option(min=1)] = 8000,
    rate: Annotated[float, typer.Option(min=1, help="Interactions per second in the live part.")] = 150.0,
) -> None:
    """Run the whole system on a generated catalog and interaction stream: stream, enrich, train, serve, stream live;
    then summarise throughput, freshness and a few users' recommendations with the reasoning behind them."""
    from infra.demo import run_demo  # deferred: loads torch

    if not run_demo(get_settings(), items, users, events, rate, console):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(demo)
