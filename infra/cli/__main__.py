"""`python -m infra.cli`: how the stack starts its own processes (the `reaseq` script needs the package installed)."""

from infra.cli import app

app()
