"""`reaseq`: the one command-line entry point for operators and catalog teams."""

from __future__ import annotations

import typer
from pydantic import ValidationError

from infra.cli import demo, models, processes, publish, rank, stack, train
from infra.cli.common import BROKER_ANSWER_S, fail
from reaseq.settings import get_settings

__all__ = ["BROKER_ANSWER_S", "app"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.callback()
def _settings_from_the_environment() -> None:
    # every command reads them: a bad one is one line naming the variable, never a traceback
    try:
        get_settings()
    except ValidationError as error:
        problems = [
            f"{'REASEQ_' + '_'.join(map(str, e['loc'])).upper() if e['loc'] else 'settings'}: {e['msg']}"
            for e in error.errors()
        ]
        fail("bad settings in the environment: " + "; ".join(problems))


# the order of `reaseq --help`
for group in (processes, stack, publish, train, rank, models, demo):
    group.register(app)
