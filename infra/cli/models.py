"""`reaseq models`: the trained model versions, and which one Triton serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from infra.cli.common import console, fail, served_endpoints
from infra.stack import serve_version
from infra.triton import TritonError, rollback
from reaseq.runfiles import load_run_state
from reaseq.settings import get_settings
from training.registry import ModelRepository, RegistryError, list_versions, newest_version, version_of

app = typer.Typer(no_args_is_help=True, help="Trained model versions and the one Triton serves.")


@app.command("list")
def models_list() -> None:
    """Model store versions, their test metrics, and which Triton version points at each."""
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


@app.command("promote")
def models_promote(
    version: Annotated[
        Path | None, typer.Argument(help="A model version directory; default: the newest trained.")
    ] = None,
) -> None:
    """Serve a model version: a running Triton loads it beside the current one and switches without failing
    requests; in a local stack without Triton yet, Triton is started with it."""
    settings = get_settings()
    target = version or newest_version(settings.model_store)
    if target is None:
        fail("no trained model version: `reaseq train` first")
    state = load_run_state(settings)
    if state is None:
        fail("no local stack: `reaseq up` first")
    try:
        serve_version(settings, state, target)
    except (TritonError, RegistryError) as exc:
        fail(exc, code=1)
    console.print(f"Triton serves {target}")


@app.command("rollback")
def models_rollback() -> None:
    """Go back to the previously served version."""
    try:
        number = rollback(get_settings(), served_endpoints())
    except TritonError as exc:
        fail(exc, code=1)
    console.print(f"Triton serves version {number} again")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")
