"""Commands that run and inspect the local stack: up, down, status, provision, replay."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from infra.cli.common import answering_bootstrap, console, fail, same_broker
from infra.feed import publish_dataset
from infra.stack import StackError, serve_version, start_stack, stop_stack, wait_until_caught_up
from infra.status import collect, render
from infra.triton import TritonError
from kafka_adapter.control import active_generation
from kafka_adapter.provision import provision as create_topics
from reaseq.settings import get_settings
from training.datasets import load_from_topics
from training.errors import ConfigError, DatasetError
from training.registry import RegistryError


def up(
    workers: Annotated[int, typer.Option(min=1)] = 1,
    serve: Annotated[bool, typer.Option(help="Start Triton with the newest trained ranker, if there is one.")] = True,
    dataset: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            help="Publish your data once the stack is up: a folder with items.jsonl and/or events.jsonl (the wire "
            "contracts, one a line), or an LC-Rec / S3-Rec dataset.",
        ),
    ] = None,
    train: Annotated[
        bool, typer.Option(help="Once the published data is in state, train a model from the topics and serve it.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="With --train: JSON of TrainConfig fields; default: the small full model."
        ),
    ] = None,
) -> None:
    """Start the local stack in the background: embedded broker (unless KAFKA_BOOTSTRAP), stream workers,
    enrichment and interest workers, the operator page, Triton; optionally feed it your data and train on it."""
    from training.train import config_from, read_config_file, small_config  # deferred: loads torch
    from training.train import train as run_training

    settings = get_settings()
    try:
        if train:  # a bad config is said before anything starts
            topics = Path("topics")
            training = (
                config_from({**read_config_file(config), "dataset": topics}, str(config))
                if config
                else small_config(topics)
            )
        state = start_stack(settings, workers, generation=1, serve=serve)
        console.print(f"stack up: broker {state.bootstrap}, workers {[w.pid for w in state.workers]}")
        if state.web:
            console.print(f"operator page: {state.web.url}")
        if dataset:
            for kind, summary in publish_dataset(settings, state.bootstrap, dataset).items():
                console.print(
                    f"{kind}: accepted {summary.accepted:,}, rejected {summary.rejected:,} {summary.reasons or ''}"
                )
        if train:
            with console.status("waiting for the stream and enrichment workers to catch up"):
                wait_until_caught_up(
                    settings, state.bootstrap, [settings.app_name(1), settings.worker_group("enrichment")], 3600
                )
            version = run_training(
                training, settings.model_store, settings.state_dir, load_from_topics(settings, state.bootstrap)
            )
            console.print(f"trained {version}")
            serve_version(settings, state, version)
    except (StackError, TritonError, RegistryError, ConfigError, DatasetError) as exc:
        fail(exc)
    if state.triton:
        t = state.triton
        console.print(
            f"triton: grpc {t.host}:{t.grpc_port}, http {t.host}:{t.http_port}, metrics http://{t.host}:{t.metrics_port}/metrics"
        )
    elif serve:
        console.print(
            "[yellow]no trained ranker yet: `reaseq up --train`, or `reaseq train ...` then `reaseq models promote`[/yellow]"
        )


def down() -> None:
    """Stop the local stack started by `reaseq up`."""
    state = stop_stack(get_settings())
    console.print("stack stopped" if state else "no local stack was running")


def status() -> None:
    """Topics, end offsets, consumer lag, store sizes and the local stack's processes; exits 1 while a component is down."""
    bootstrap = answering_bootstrap()
    same_broker(bootstrap, code=1)
    found = collect(get_settings(), bootstrap)
    console.print(render(found))
    if found.down:
        raise typer.Exit(1)


def provision() -> None:
    """Create the project's topics (idempotent)."""
    settings, bootstrap = get_settings(), answering_bootstrap()
    created = create_topics(settings, bootstrap, active_generation(settings, bootstrap))
    console.print(f"{len(created)} topics created" + (f": {', '.join(created)}" if created else ""))


def replay(
    from_time: Annotated[
        datetime | None,
        typer.Option(
            "--from",
            help="Rebuild histories from interactions published since this time (ISO 8601); the catalog is always whole.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1)] = 1,
) -> None:
    """Rebuild every state store from the source topics into a new generation, then switch to it."""
    from infra.replay import run_replay  # deferred: loads Faust

    generation = run_replay(get_settings(), answering_bootstrap(), from_time, workers, console)
    console.print(f"generation {generation} caught up and now serves")


def register(app: typer.Typer) -> None:
    for command in (provision, up, down, status, replay):
        app.command()(command)
