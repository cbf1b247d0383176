"""`reaseq rank`: ask the served ranker for a user's top k, or to score candidates."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from infra.cli.common import console, fail, served_endpoints
from serving.client import RankClient, RankRequestError, RankUnavailableError


def rank(
    user: Annotated[str, typer.Option(help="The user to rank for.")],
    candidate: Annotated[
        list[str] | None, typer.Option(help="A candidate item id (repeat); none: generate the top k.")
    ] = None,
    k: Annotated[int, typer.Option(min=1, max=100)] = 10,
    protocol: Annotated[str, typer.Option(help="grpc or http.")] = "grpc",
    url: Annotated[str | None, typer.Option(help="host:port of Triton; default: the local stack's.")] = None,
) -> None:
    """Ask the served ranker for a user's top k, or to score candidates."""
    if protocol not in ("grpc", "http"):
        raise typer.BadParameter("protocol must be grpc or http")
    if url is None:
        endpoints = served_endpoints()
        url = endpoints.grpc_url if protocol == "grpc" else endpoints.http_url
    try:
        answer = RankClient(url, protocol).rank(user, candidate, k)  # type: ignore[arg-type]
    except (RankRequestError, RankUnavailableError) as exc:
        fail(exc, code=1)
    table = Table(title=f"{answer.user_id}: {answer.source.value}, model {answer.model_version}")
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("score", justify="right")
    for position, item in enumerate(answer.items, 1):
        table.add_row(str(position), item.item_id, f"{item.score:.4f}")
    console.print(table)
    if answer.unknown:
        console.print(f"unknown candidates: {', '.join(answer.unknown)}")


def register(app: typer.Typer) -> None:
    app.command()(rank)
