"""`reaseq`: the one command-line entry point for operators and catalog teams."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from reaseq.settings import get_settings

if TYPE_CHECKING:
    from infra.triton import TritonEndpoints

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console()
BROKER_ANSWER_S = 5.0  # one-shot commands give up on an unreachable broker after this long


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


def _answering_bootstrap() -> str:
    """The broker, for one-shot commands: exit with a clear message if it does not answer within BROKER_ANSWER_S."""
    from infra.broker import BrokerError, wait_until_answers

    bootstrap = _bootstrap()
    try:
        wait_until_answers(bootstrap, BROKER_ANSWER_S)
    except BrokerError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    return bootstrap


def _awaited_bootstrap(topics: Sequence[str] = ()) -> str:
    """The broker, for long-running workers: wait, logging why, until it answers and ``topics`` exist."""
    from infra.broker import await_kafka

    bootstrap = _bootstrap()
    await_kafka(bootstrap, topics)
    return bootstrap


@app.command()
def worker(
    generation: Annotated[int | None, typer.Option(help="State generation; default: the serving one.")] = None,
    name: Annotated[str, typer.Option(help="Worker name; names its local RocksDB folder.")] = "w0",
) -> None:
    """Run one stream worker (Faust) in the foreground."""
    from infra.control import active_generation
    from reaseq.logs import configure
    from streams.worker import run_worker

    settings = get_settings()
    configure(settings.log_level)
    bootstrap = _awaited_bootstrap()  # the worker provisions its topics itself
    run_worker(settings, bootstrap, generation or active_generation(settings, bootstrap), name)


@app.command()
def enrich() -> None:
    """Run one enrichment worker in the foreground (item knowledge from the configured reasoner)."""
    from infra.provision import shared_topics
    from reaseq.logs import configure
    from workers.enrichment import run_enrichment

    settings = get_settings()
    configure(settings.log_level)
    run_enrichment(settings, _awaited_bootstrap(shared_topics(settings)))


@app.command()
def interests() -> None:
    """Run one interest worker in the foreground (beyond-log interests from the served version's interest model, else the newest)."""
    from infra.provision import shared_topics
    from reaseq.logs import configure
    from workers.interests import run_interests

    settings = get_settings()
    configure(settings.log_level)
    run_interests(settings, _awaited_bootstrap(shared_topics(settings)))


@app.command()
def provision() -> None:
    """Create the project's topics (idempotent)."""
    from infra.control import active_generation
    from infra.provision import provision as create

    settings, bootstrap = get_settings(), _answering_bootstrap()
    created = create(settings, bootstrap, active_generation(settings, bootstrap))
    console.print(f"{len(created)} topics created" + (f": {', '.join(created)}" if created else ""))


@app.command()
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
        typer.Option(exists=True, dir_okay=False, help="With --train: JSON of TrainConfig fields; default: the small full model."),
    ] = None,
) -> None:
    """Start the local stack in the background: embedded broker (unless KAFKA_BOOTSTRAP), stream workers,
    enrichment and interest workers, the operator page, Triton; optionally feed it your data and train on it."""
    from infra.stack import StackError, serve_version, start_stack, wait_until_caught_up
    from infra.triton import TritonError
    from models.errors import ConfigError, DatasetError

    settings = get_settings()
    try:
        if train:  # a bad config is said before anything starts
            from models.datasets import load_from_topics
            from models.train import config_from, read_config_file, small_config
            from models.train import train as run_training

            topics = Path("topics")
            training = config_from({**read_config_file(config), "dataset": topics}, str(config)) if config else small_config(topics)
        state = start_stack(settings, workers, generation=1, serve=serve)
        console.print(f"stack up: broker {state.bootstrap}, workers {[w.pid for w in state.workers]}")
        if state.web:
            console.print(f"operator page: {state.web.url}")
        if dataset:
            from infra.feed import publish_dataset

            for kind, summary in publish_dataset(settings, state.bootstrap, dataset).items():
                console.print(f"{kind}: accepted {summary.accepted:,}, rejected {summary.rejected:,} {summary.reasons or ''}")
        if train:
            with console.status("waiting for the stream and enrichment workers to catch up"):
                wait_until_caught_up(settings, state.bootstrap, [settings.app_name(1), settings.worker_group("enrichment")], 3600)
            version = run_training(training, settings.model_store, settings.state_dir, load_from_topics(settings, state.bootstrap))
            console.print(f"trained {version}")
            serve_version(settings, state, version)
    except (StackError, TritonError, ConfigError, DatasetError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if state.triton:
        t = state.triton
        console.print(f"triton: grpc {t.host}:{t.grpc_port}, http {t.host}:{t.http_port}, metrics http://{t.host}:{t.metrics_port}/metrics")
    elif serve:
        console.print("[yellow]no trained ranker yet: `reaseq up --train`, or `reaseq train ...` then `reaseq models promote`[/yellow]")


@app.command(hidden=True)
def supervise() -> None:
    """Run the local stack's supervisor in the foreground (`reaseq up` starts it detached)."""
    from infra.supervisor import run_supervisor
    from reaseq.logs import configure

    settings = get_settings()
    configure(settings.log_level)
    run_supervisor(settings, _bootstrap())


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

    summary = publish_file(get_settings(), _answering_bootstrap(), kind.value, file, validate)
    console.print(f"accepted {summary.accepted}, rejected {summary.rejected}")
    for reason, count in sorted(summary.reasons.items()):
        console.print(f"  {reason}: {count}")


@app.command()
def status() -> None:
    """Topics, end offsets, consumer lag, store sizes and the local stack's processes; exits 1 while a component is down."""
    bootstrap = _answering_bootstrap()  # before the slow imports: an unreachable broker is reported at once
    from reaseq.status import collect, render

    status = collect(get_settings(), bootstrap)
    console.print(render(status))
    if status.down:
        raise typer.Exit(1)


@app.command()
def replay(
    from_time: Annotated[
        datetime | None, typer.Option("--from", help="Rebuild histories from interactions published since this time (ISO 8601); the catalog is always whole.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1)] = 1,
) -> None:
    """Rebuild every state store from the source topics into a new generation, then switch to it."""
    from infra.replay import run_replay

    generation = run_replay(get_settings(), _answering_bootstrap(), from_time, workers, console)
    console.print(f"generation {generation} caught up and now serves")


@app.command()
def train(
    dataset: Annotated[
        Path | None, typer.Argument(exists=True, help="A dataset folder or file (LC-Rec or S3-Rec format).")
    ] = None,
    from_topics: Annotated[bool, typer.Option(help="Train on the local stack's items and events topics instead.")] = False,
    config: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="JSON of TrainConfig fields (model sizes, epochs...).")
    ] = None,
    ids: Annotated[str, typer.Option(help="'rqvae' (our own, from item text) or 'published' (*.rqvae-index.json).")] = "rqvae",
    variant: Annotated[
        str,
        typer.Option(
            help="'full' (the distilled ranker: knowledge, reasoning steps, beyond-log items) or one ablation row: "
            "tiger, knowledge, cot_pooled, cot_structured, beyond_log. Datasets without item text need tiger or beyond_log."
        ),
    ] = "full",
    epochs: Annotated[int | None, typer.Option(min=1, help="Overrides the config's epochs (default 200).")] = None,
    out: Annotated[Path | None, typer.Option(help="Model store root (default: REASEQ_MODEL_STORE).")] = None,
) -> None:
    """Train semantic IDs, the interest model and the (distilled) generative ranker on a dataset, evaluate, and write a
    model version."""
    from models.datasets import load_from_topics
    from models.errors import ConfigError, DatasetError
    from models.train import VARIANTS, config_from, read_config_file, with_variant
    from models.train import train as run_training

    if (dataset is None) == (not from_topics):
        raise typer.BadParameter("give a DATASET or --from-topics, not both")
    if variant not in VARIANTS:
        raise typer.BadParameter(f"--variant must be one of {', '.join(VARIANTS)}")
    settings = get_settings()
    try:
        fields = read_config_file(config) if config else {}
        fields.update(dataset=dataset or Path("topics"), ids=ids, **({"epochs": epochs} if epochs else {}))
        training = config_from(fields, str(config or "the options"))
        if config is None or variant != "full":  # a config file says what it trains unless a variant is asked for
            training = with_variant(training, variant)
        data = load_from_topics(settings, _bootstrap()) if from_topics else None
        version = run_training(training, out or settings.model_store, settings.state_dir, data)
    except (ConfigError, DatasetError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"model version written to {version}")
    console.print((version / "metrics.json").read_text())


@app.command()
def serve() -> None:
    """Run Triton in the foreground with the newest ranker version (containers; `reaseq up` runs it detached);
    with no trained version yet, wait for one."""
    from infra.triton import TritonError, exec_triton
    from reaseq.logs import configure

    settings = get_settings()
    configure(settings.log_level)
    try:
        exec_triton(settings, _bootstrap())
    except TritonError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _triton_endpoints() -> TritonEndpoints:
    from infra.stack import triton_endpoints

    endpoints = triton_endpoints(get_settings())
    if endpoints is None:
        console.print("[red]Triton is not running: `reaseq up` starts it once a ranker is trained (or name one with REASEQ_TRITON_*)[/red]")
        raise typer.Exit(2)
    return endpoints


@app.command()
def rank(
    user: Annotated[str, typer.Option(help="The user to rank for.")],
    candidate: Annotated[list[str] | None, typer.Option(help="A candidate item id (repeat); none: generate the top k.")] = None,
    k: Annotated[int, typer.Option(min=1, max=100)] = 10,
    protocol: Annotated[str, typer.Option(help="grpc or http.")] = "grpc",
    url: Annotated[str | None, typer.Option(help="host:port of Triton; default: the local stack's.")] = None,
) -> None:
    """Ask the served ranker for a user's top k, or to score candidates."""
    from serving.client import RankClient, RankRequestError, RankUnavailableError

    if protocol not in ("grpc", "http"):
        raise typer.BadParameter("protocol must be grpc or http")
    if url is None:
        endpoints = _triton_endpoints()
        url = endpoints.grpc_url if protocol == "grpc" else endpoints.http_url
    try:
        answer = RankClient(url, protocol).rank(user, candidate, k)  # type: ignore[arg-type]
    except (RankRequestError, RankUnavailableError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    table = Table(title=f"{answer.user_id}: {answer.source.value}, model {answer.model_version}")
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("score", justify="right")
    for position, item in enumerate(answer.items, 1):
        table.add_row(str(position), item.item_id, f"{item.score:.4f}")
    console.print(table)
    if answer.unknown:
        console.print(f"unknown candidates: {', '.join(answer.unknown)}")


models_app = typer.Typer(no_args_is_help=True, help="Trained model versions and the one Triton serves.")
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """Model store versions, their test metrics, and which Triton version points at each."""
    import json

    from infra.triton import ModelRepository
    from models.store import list_versions, version_of

    settings = get_settings()
    published = {path.resolve(): number for number, path in ModelRepository(settings).versions().items()}
    table = Table(title=f"model store {settings.model_store}")
    for column in ("version", "triton", "recall@10", "ndcg@10"):
        table.add_column(column)
    for path in list_versions(settings.model_store):
        metrics_file = path / "metrics.json"
        test = json.loads(metrics_file.read_text()).get("test", {}) if metrics_file.exists() else {}
        number = published.get(path.resolve())
        table.add_row(
            version_of(path),
            "" if number is None else str(number),
            f"{test.get('recall@10', float('nan')):.4f}",
            f"{test.get('ndcg@10', float('nan')):.4f}",
        )
    console.print(table)


@models_app.command("promote")
def models_promote(
    version: Annotated[Path | None, typer.Argument(help="A model version directory; default: the newest trained.")] = None,
) -> None:
    """Serve a model version: a running Triton loads it beside the current one and switches without failing
    requests; in a local stack without Triton yet, Triton is started with it."""
    from infra.stack import load_run_state, serve_version
    from infra.triton import TritonError
    from models.store import newest_version

    settings = get_settings()
    target = version or newest_version(settings.model_store)
    if target is None:
        console.print("[red]no trained model version: `reaseq train` first[/red]")
        raise typer.Exit(2)
    state = load_run_state(settings)
    if state is None:
        console.print("[red]no local stack: `reaseq up` first[/red]")
        raise typer.Exit(2)
    try:
        serve_version(settings, state, target)
    except TritonError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"Triton serves {target}")


@models_app.command("rollback")
def models_rollback() -> None:
    """Go back to the previously served version."""
    from infra.triton import TritonError, rollback

    try:
        number = rollback(get_settings(), _triton_endpoints())
    except TritonError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"Triton serves version {number} again")


@app.command()
def demo(
    items: Annotated[int, typer.Option(min=1)] = 400,
    users: Annotated[int, typer.Option(min=1)] = 300,
    events: Annotated[int, typer.Option(min=1)] = 8000,
    rate: Annotated[float, typer.Option(min=1, help="Interactions per second in the live part.")] = 150.0,
) -> None:
    """Run the whole system on a generated catalog and interaction stream: stream, enrich, train, serve, stream live;
    then summarise throughput, freshness and a few users' recommendations with the reasoning behind them."""
    from infra.demo import run_demo

    if not run_demo(get_settings(), items, users, events, rate, console):
        raise typer.Exit(1)


@app.command()
def web(
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 serves other machines.")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Default: REASEQ_WEB_PORT; unset there: a free one.")
    ] = None,
) -> None:
    """Serve the operator web page: pipeline health and throughput, recent enriched items, a user lookup."""
    from dashboard.server import run_dashboard
    from infra.ports import free_port
    from reaseq.logs import configure

    settings = get_settings()
    configure(settings.log_level)
    bootstrap = _bootstrap()
    port = port or settings.web_port or free_port()
    console.print(f"operator page: http://{host}:{port}/")
    run_dashboard(settings, bootstrap, host, port)


if __name__ == "__main__":
    app()
