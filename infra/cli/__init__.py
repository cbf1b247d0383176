"""`reaseq`: the one command-line entry point for operators and catalog teams."""

from __future__ import annotations

import typer

from infra.cli import demo, models, processes, publish, rank, stack, train
from infra.cli.common import BROKER_ANSWER_S

__all__ = ["BROKER_ANSWER_S", "app"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
# the order of `reaseq --help`
for group in (processes, stack, publish, train, rank, models, demo):
    group.register(app)
