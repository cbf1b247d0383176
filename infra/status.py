"""What `reaseq status` reports: topics and their end offsets, consumer lag per group, local store sizes,
model versions, Triton and the LLM backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table

from dashboard.probes import Health, llm_health, pipeline_lag, triton_health
from kafka_adapter.control import active_generation
from kafka_adapter.offsets import exact_end_offsets, list_partitions
from kafka_adapter.provision import generation_topics
from reaseq.metrics import exporters
from reaseq.runfiles import ComponentReport, stack_processes
from reaseq.settings import Settings
from reaseq.topics import (
    CATALOG,
    topic_config,
    topic_name,
)
from streams.app import worker_datadir
from training.registry import list_versions, version_of


@dataclass(frozen=True)
class TopicStatus:
    name: str
    partitions: int
    records: int  # end offset minus low watermark, summed over partitions
    policy: str


@dataclass(frozen=True)
class Status:
    bootstrap: str
    generation: int
    topics: list[TopicStatus]
    lag: dict[str, dict[str, int]]  # consumer group -> input topic -> records not yet processed
    stores: dict[str, int]  # local RocksDB folder -> bytes
    models: list[str]  # trained model versions, oldest first
    exporters: dict[str, str]  # worker process -> its Prometheus /metrics URL
    serving: Health  # Triton, and the ranker version it serves
    llm: Health  # the reasoning backend, and whether it answers
    processes: dict[str, ComponentReport] | None  # the local stack's processes; None without a local stack

    @property
    def down(self) -> list[str]:
        """The components that are down: a process of the local stack not running, or Triton not answering."""
        down = [name for name, process in (self.processes or {}).items() if process.state != "running"]
        return down + (["triton"] if self.serving.state == "down" and "triton" not in down else [])


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def collect(settings: Settings, bootstrap: str) -> Status:
    generation = active_generation(settings, bootstrap)
    policies = {
        topic_name(settings, spec, generation): topic_config(settings, spec)["cleanup.policy"] for spec in CATALOG
    }
    names = list(policies) + [t for t in generation_topics(settings, generation) if t not in policies]
    partitions = list_partitions(bootstrap, names)
    counts: dict[str, list[int]] = {}
    for (topic, _), (low, end) in exact_end_offsets(bootstrap, partitions).items():
        entry = counts.setdefault(topic, [0, 0])
        entry[0] += 1
        entry[1] += end - low
    topics = [TopicStatus(n, counts[n][0], counts[n][1], policies.get(n, "compact")) for n in names if n in counts]
    stores_root = worker_datadir(settings, generation, "x").parent
    stores = (
        {str(p): _folder_bytes(p) for p in sorted(stores_root.glob("*")) if p.is_dir()} if stores_root.exists() else {}
    )
    models = [version_of(path) for path in list_versions(settings.model_store)]
    lag = pipeline_lag(settings, bootstrap, generation)
    return Status(
        bootstrap,
        generation,
        topics,
        lag,
        stores,
        models,
        exporters(settings),
        triton_health(settings),
        llm_health(settings),
        stack_processes(settings),
    )


def render(status: Status) -> Group:
    topics = Table(title=f"topics on {status.bootstrap} (serving generation {status.generation})")
    for column in ("topic", "partitions", "records", "policy"):
        topics.add_column(column, justify="right" if column in ("partitions", "records") else "left")
    for t in status.topics:
        topics.add_row(t.name, str(t.partitions), f"{t.records:,}", t.policy)
    lag = Table(title="consumer lag per group")
    for column in ("group", "input topic", "lag"):
        lag.add_column(column, justify="right" if column == "lag" else "left")
    for group, topics_lag in status.lag.items():
        for name, value in topics_lag.items():
            lag.add_row(group, name, f"{value:,}")
    stores = Table(title="local RocksDB stores")
    stores.add_column("folder")
    stores.add_column("size", justify="right")
    for path, size in status.stores.items():
        stores.add_row(path, f"{size / 1024:,.0f} KiB")
    if not status.stores:
        stores.add_row("(none on this machine)", "")
    models = f"model versions: {len(status.models)}" + (
        f", newest {status.models[-1]}" if status.models else " (none trained)"
    )
    metrics = Table(title="worker metrics (Prometheus)")
    metrics.add_column("process")
    metrics.add_column("url")
    for process, url in status.exporters.items():
        metrics.add_row(process, url)
    parts: list[RenderableType] = [topics, lag, stores, metrics]
    if status.processes is not None:
        processes = Table(title="local stack processes (restarted by its supervisor when they exit)")
        for column in ("process", "state", "detail"):
            processes.add_column(column)
        for name, component in status.processes.items():
            style = "green" if component.state == "running" else "yellow" if component.state == "restarting" else "red"
            processes.add_row(name, f"[{style}]{component.state}[/{style}]", component.describe())
        parts.append(processes)
    parts += [models, f"Triton: {status.serving.detail}", f"LLM backend: {status.llm.detail}"]
    if status.down:
        parts.append(f"[red]down: {', '.join(status.down)}[/red]")
    return Group(*parts)
