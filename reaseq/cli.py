"""`reaseq`: the one command-line entry point for operators and catalog teams."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from reaseq.settings import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console()


class SourceKind(str, Enum):
    items = "items"
    events = "events"


def _bootstrap() -> str:
    from infra.stack import StackError, resolve_bootstrap

    try:
        return resolve_bootstrap(get_settings())
    except StackError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
def worker(
    generation: Annotated[int | None, typer.Option(help="State generation; default: the serving one.")] = None,
    name: Annotated[str, typer.Option(help="Worker name; names its local RocksDB folder.")] = "w0",
) -> None:
    """Run one stream worker (Faust) in the foreground."""
    from infra.control import active_generation
    from streams.worker import run_worker

    settings, bootstrap = get_settings(), _bootstrap()
    run_worker(settings, bootstrap, generation or active_generation(settings, bootstrap), name)


@app.command()
def provision() -> None:
    """Create the project's topics (idempotent)."""
    from infra.control import active_generation
    from infra.provision import provision as create

    settings, bootstrap = get_settings(), _bootstrap()
    created = create(settings, bootstrap, active_generation(settings, bootstrap))
    console.print(f"{len(created)} topics created" + (f": {', '.join(created)}" if created else ""))


@app.command()
def up(workers: Annotated[int, typer.Option(min=1)] = 1) -> None:
    """Start the local stack in the background: embedded broker (unless KAFKA_BOOTSTRAP) and stream workers."""
    from infra.stack import StackError, start_stack

    try:
        state = start_stack(get_settings(), workers, generation=1)
    except StackError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"stack up: broker {state.bootstrap}, workers {[w.pid for w in state.workers]}")


@app.command()
def down() -> None:
    """Stop the local stack started by `reaseq up`."""
    from infra.stack import stop_stack

    state = stop_stack(get_settings())
    console.print("stack stopped" if state else "no local stack was running")


@app.command()
def publish(
    kind: SourceKind,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON lines, one record a line.")],
    validate: Annotated[bool, typer.Option(help="Reject invalid records here (to the dead-letter topic).")] = True,
) -> None:
    """Publish catalog items or interactions from a JSON-lines file."""
    from reaseq.publish import publish_file

    summary = publish_file(get_settings(), _bootstrap(), kind.value, file, validate)
    console.print(f"accepted {summary.accepted}, rejected {summary.rejected}")
    for reason, count in sorted(summary.reasons.items()):
        console.print(f"  {reason}: {count}")


@app.command()
def status() -> None:
    """Topics, end offsets, consumer lag and store sizes."""
    from reaseq.status import collect, render

    settings = get_settings()
    console.print(render(collect(settings, _bootstrap())))


@app.command()
def replay(
    from_time: Annotated[
        datetime | None, typer.Option("--from", help="Rebuild histories from interactions published since this time (ISO 8601); the catalog is always whole.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1)] = 1,
) -> None:
    """Rebuild every state store from the source topics into a new generation, then switch to it."""
    from infra.replay import run_replay

    generation = run_replay(get_settings(), _bootstrap(), from_time, workers, console)
    console.print(f"generation {generation} caught up and now serves")


@app.command()
def train(
    dataset: Annotated[Path, typer.Argument(exists=True, help="A dataset folder or file (LC-Rec or S3-Rec format).")],
    ids: Annotated[str, typer.Option(help="'rqvae' (our own, from item text) or 'published' (*.rqvae-index.json).")] = "rqvae",
    epochs: Annotated[int, typer.Option(min=1)] = 200,
    out: Annotated[Path, typer.Option(help="Model directory root; a new version folder is written under it.")] = Path("model_store"),
) -> None:
    """Train semantic IDs and the generative ranker on a dataset, evaluate, and write a model version."""
    from models.train import TrainConfig, train as run_training

    settings = get_settings()
    version = run_training(TrainConfig(dataset=dataset, ids=ids, epochs=epochs), out, settings.state_dir)
    console.print(f"model version written to {version}")
    console.print((version / "metrics.json").read_text())


@app.command()
def demo(
    items: Annotated[int, typer.Option(min=1)] = 400,
    users: Annotated[int, typer.Option(min=1)] = 200,
    events: Annotated[int, typer.Option(min=1)] = 5000,
) -> None:
    """Run the backbone on a generated catalog and interaction stream and show the resulting state."""
    from infra.demo import run_demo

    run_demo(get_settings(), items, users, events, console)


if __name__ == "__main__":
    app()
