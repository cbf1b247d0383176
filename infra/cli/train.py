"""`reaseq train`: semantic IDs, the interest model and the ranker from a dataset or the topics, as a model version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from infra.cli.common import bootstrap, console, fail
from reaseq.settings import get_settings
from training.datasets import load_from_topics
from training.errors import ConfigError, DatasetError


def train(
    dataset: Annotated[
        Path | None, typer.Argument(exists=True, help="A dataset folder or file (LC-Rec or S3-Rec format).")
    ] = None,
    from_topics: Annotated[
        bool, typer.Option(help="Train on the local stack's items and events topics instead.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="JSON of TrainConfig fields (model sizes, epochs...)."),
    ] = None,
    ids: Annotated[
        str, typer.Option(help="'rqvae' (our own, from item text) or 'published' (*.rqvae-index.json).")
    ] = "rqvae",
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
    from training.train import VARIANTS, config_from, read_config_file, with_variant  # deferred: loads torch
    from training.train import train as run_training

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
        data = load_from_topics(settings, bootstrap()) if from_topics else None
        version = run_training(training, out or settings.model_store, settings.state_dir, data)
    except (ConfigError, DatasetError) as exc:
        fail(exc)
    console.print(f"model version written to {version}")
    console.print((version / "metrics.json").read_text())


def register(app: typer.Typer) -> None:
    app.command()(train)
