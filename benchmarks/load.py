"""Load benchmark: 100,000 good interactions and 10,000 fuzzed bad records through real stream workers, with the
exact account of every record.

``python -m benchmarks.load`` starts its own embedded broker and stream workers (a consumer group of two by default)
and writes ``benchmarks/results/load.json``. The scenario is ``tests.support.fuzz.load_mix``, the one
``tests/test_load.py`` runs: good interactions (1 % of them published twice), bad records of every fuzzed kind,
and interactions for an item that is never published, beyond what the pending table keeps for it. The table shows
what was published and what the stream made of it: applied to histories, dead-lettered by reason, held in the
pending table, lost and applied twice (both must be 0), and the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.common import machine
from infra.broker import EmbeddedBroker
from infra.processes import spawn_worker, stop_process
from kafka_adapter.provision import provision
from reaseq.settings import Settings
from tests.support.fuzz import GENERATION, LOAD_LIMITS, load_mix, run_mix

RESULTS = Path(__file__).parent / "results" / "load.json"

console = Console()


def run(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    broker = EmbeddedBroker(log_path=state_dir / "broker.log")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with console.status("starting the embedded broker"):
            broker.start()
            tag = uuid.uuid4().hex[:8]
            # INFO: run_mix reads the workers' partition assignments from their logs.
            settings = Settings(
                kafka_bootstrap=broker.bootstrap,
                state_dir=state_dir,
                topic_prefix=f"load-{tag}.",
                app_id=f"load-{tag}",
                log_level="INFO",
                **LOAD_LIMITS,
            )
            provision(settings, broker.bootstrap, GENERATION)
        with console.status("generating the mix"):
            started = time.monotonic()
            mix = load_mix(settings, args.good, args.bad, args.seed)
            generated_s = time.monotonic() - started
        with console.status(
            f"publishing and following {len(mix.items) + len(mix.events):,} records, {args.workers} worker(s)"
        ):
            outcome = run_mix(
                settings,
                broker.bootstrap,
                mix,
                lambda name: processes.append(spawn_worker(settings, broker.bootstrap, GENERATION, name)),
                args.workers,
                args.timeout,
            )
        exited = [p.pid for p in processes if p.poll() is not None]
        return {**outcome.report(), "generate_s": round(generated_s, 1), "workers_exited": exited}
    finally:
        for process in processes:
            stop_process(process.pid, timeout_s=20)
        broker.stop()


def report(result: dict[str, Any]) -> None:
    table = Table(title=f"Load: {result['workers']} stream worker(s), {result['partitions']} partitions")
    table.add_column("measure")
    table.add_column("count", justify="right")
    table.add_column("expected", justify="right")
    published = result["published"]
    table.add_row("published: items (good / bad)", f"{published['items']:,} / {published['items_bad']:,}", "")
    table.add_row("published: events good (distinct)", f"{published['events_good']:,}", "")
    table.add_row("published: events re-sent (same bytes)", f"{published['events_resent']:,}", "")
    table.add_row("published: events bad", f"{published['events_bad']:,}", "")
    table.add_row(
        "published: events for an item never published", f"{published['events_for_an_item_never_published']:,}", ""
    )
    table.add_row("applied to histories (sum of versions)", f"{result['applied']:,}", f"{result['expected_applied']:,}")
    for reason, expected in result["expected_dead_letters"].items():
        table.add_row(f"dead-lettered: {reason}", f"{result['dead_letters'].get(reason, 0):,}", f"{expected:,}")
    table.add_row("held in the pending table", f"{result['held_pending']:,}", f"{result['expected_held_pending']:,}")
    table.add_row("lost", f"{result['lost']:,}", "0")
    table.add_row("applied twice", f"{result['duplicated']:,}", "0")
    table.add_row(
        "re-emitted identical (updates / dead letters)",
        f"{result['re_emitted_identical_updates']} / {result['re_emitted_dead_letters']}",
        "",
    )
    table.add_row("events topic, end to end", f"{result['events_per_s']:,} events/s", "")
    table.add_row("history updates, first to last", f"{result['updates_per_s']:,} updates/s", "")
    table.add_row("publish / publish → full account", f"{result['publish_s']} s / {result['elapsed_s']} s", "")
    console.print(table)
    for problem in result["problems"]:
        console.print(f"[red]{problem}[/red]")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.splitlines()[0])
    parser.add_argument("--good", type=int, default=100_000, help="distinct good interactions")
    parser.add_argument("--bad", type=int, default=10_000, help="fuzzed bad records")
    parser.add_argument("--workers", type=int, default=2, help="stream workers in the consumer group")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds each phase may take")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_before = round(os.getloadavg()[0], 2)  # CPU-bound figures: a busy machine shows in them
    state_dir = Path(tempfile.mkdtemp(prefix="reaseq-load-"))
    try:
        result = run(args, state_dir)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    result.update(
        seed=args.seed,
        date=date.today().isoformat(),
        machine=machine(),
        load_average_1m_before=load_before,
        load_average_1m_after=round(os.getloadavg()[0], 2),
    )
    report(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"written to {args.output}")
    if result["problems"] or result["workers_exited"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
