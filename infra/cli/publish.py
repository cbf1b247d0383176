"""`reaseq publish`: catalog items or interactions from a JSON-lines file onto the source topics."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from infra.cli.common import answering_bootstrap, console
from kafka_adapter.publish import publish_file
from reaseq.settings import get_settings


class SourceKind(str, Enum):
    items = "items"
    events = "events"


def publish(
    kind: SourceKind,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON lines, one record a line.")],
    validate: Annotated[bool, typer.Option(help="Reject invalid records here (to the dead-letter topic).")] = True,
) -> None:
    """Publish catalog items or interactions from a JSON-lines file."""
    summary = publish_file(get_settings(), answering_bootstrap(), kind.value, file, validate)
    console.print(f"accepted {summary.accepted}, rejected {summary.rejected}")
    for reason, count in sorted(summary.reasons.items()):
        console.print(f"  {reason}: {count}")


def register(app: typer.Typer) -> None:
    app.command()(publish)
