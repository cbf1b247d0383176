"""`make bench-demo`: `reaseq demo` run several times in a row, as a new user runs it; each run's parts timed.

Each run is a fresh `python -m infra.cli demo` (the defaults of `make demo`) in its own state folder. Its exit
code, wall time and the seconds it printed for each part are recorded; a run that fails keeps the tail of its output.
Results: ``benchmarks/results/demo.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.common import machine

PARTS = {  # what the demo prints at the end of each part -> the seconds it reports there
    "history in state": re.compile(r"part 1: .* enriched in ([\d.]+) s"),
    "training": re.compile(r"trained \S+ in ([\d.]+) s"),
    "interests inferred": re.compile(r"inferred with the new model in ([\d.]+) s"),
    "live part": re.compile(r"part 3: .* in ([\d.]+) s"),
}


def run_once(timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="reaseq-demo-") as state:
        env = {**os.environ, "REASEQ_STATE_DIR": state, "COLUMNS": "200"}
        started = time.monotonic()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "infra.cli", "demo"], env=env, capture_output=True, text=True, timeout=timeout_s
            )
            code, out = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as error:
            code, out = None, str(error.stdout or "")
        seconds = time.monotonic() - started
    parts = {name: float(m.group(1)) if (m := pattern.search(out)) else None for name, pattern in PARTS.items()}
    result: dict[str, Any] = {"exit_code": code, "finished": code == 0, "wall_s": round(seconds, 1), "parts_s": parts}
    if code != 0:
        result["output_tail"] = out[-3000:]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=1800.0, help="Seconds one run may take.")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    console = Console()
    runs = []
    for number in range(1, args.runs + 1):
        console.print(f"run {number} of {args.runs} ...")
        runs.append(run_once(args.timeout))
        console.print(json.dumps(runs[-1]))
    table = Table(title=f"reaseq demo, {args.runs} runs in a row")
    for column in ("run", "finished", "wall s", *PARTS):
        table.add_column(column, justify="right")
    for number, run in enumerate(runs, 1):
        parts = [f"{s:.1f}" if s is not None else "-" for s in run["parts_s"].values()]
        table.add_row(
            str(number), "yes" if run["finished"] else f"no ({run['exit_code']})", f"{run['wall_s']:.0f}", *parts
        )
    console.print(table)
    args.results.mkdir(parents=True, exist_ok=True)
    body = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "runs": runs}
    (args.results / "demo.json").write_text(json.dumps(body, indent=2) + "\n")
    if not all(run["finished"] for run in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
