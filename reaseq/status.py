"""What `reaseq status` reports: topics and their end offsets, consumer lag, local store sizes, Triton."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Group
from rich.table import Table

from infra.control import active_generation
from infra.offsets import exact_end_offsets, group_lag, list_partitions
from infra.provision import generation_topics
from reaseq.settings import Settings
from reaseq.topics import BY_ITEM, BY_USER, CATALOG, EVENTS, ITEMS, topic_config, topic_name
from streams.app import worker_datadir


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
    lag: dict[str, int]  # per input topic of the serving generation's consumer group
    stores: dict[str, int]  # local RocksDB folder -> bytes
    serving: str  # Triton's health and the ranker version it serves, in words


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def collect(settings: Settings, bootstrap: str) -> Status:
    generation = active_generation(settings, bootstrap)
    policies = {topic_name(settings, spec, generation): topic_config(settings, spec)["cleanup.policy"] for spec in CATALOG}
    names = list(policies) + [t for t in generation_topics(settings, generation) if t not in policies]
    partitions = list_partitions(bootstrap, names)
    counts: dict[str, list[int]] = {}
    for (topic, _), (low, end) in exact_end_offsets(bootstrap, partitions).items():
        entry = counts.setdefault(topic, [0, 0])
        entry[0] += 1
        entry[1] += end - low
    topics = [TopicStatus(n, counts[n][0], counts[n][1], policies.get(n, "compact")) for n in names if n in counts]
    inputs = [topic_name(settings, spec, generation) for spec in (ITEMS, EVENTS, BY_ITEM, BY_USER)]
    lag = group_lag(bootstrap, settings.app_name(generation), inputs)
    stores_root = worker_datadir(settings, generation, "x").parent
    stores = {str(p): _folder_bytes(p) for p in sorted(stores_root.glob("*")) if p.is_dir()} if stores_root.exists() else {}
    return Status(bootstrap, generation, topics, lag, stores, _serving(settings))


def _serving(settings: Settings) -> str:
    from infra.stack import load_run_state
    from infra.triton import ModelRepository, served_version

    state = load_run_state(settings)
    if state is None or state.triton is None:
        return "Triton: not running in the local stack"
    t = state.triton
    endpoints = t.endpoints()
    try:
        version = served_version(endpoints)
    except Exception as error:  # the status of a broken server is what the operator asked for
        return f"Triton (pid {t.pid}, grpc {endpoints.grpc_url}): not answering: {error}"
    if version is None:
        return f"Triton (pid {t.pid}, grpc {endpoints.grpc_url}): up, no ranker version ready"
    model_dir = ModelRepository(settings).versions().get(version)
    return f"Triton (pid {t.pid}, grpc {endpoints.grpc_url}, metrics {endpoints.metrics_url}): ranker version {version} ready, {model_dir}"


def render(status: Status) -> Group:
    topics = Table(title=f"topics on {status.bootstrap} (serving generation {status.generation})")
    for column in ("topic", "partitions", "records", "policy"):
        topics.add_column(column, justify="right" if column in ("partitions", "records") else "left")
    for t in status.topics:
        topics.add_row(t.name, str(t.partitions), f"{t.records:,}", t.policy)
    lag = Table(title="consumer lag of the serving generation")
    lag.add_column("input topic")
    lag.add_column("lag", justify="right")
    for name, value in status.lag.items():
        lag.add_row(name, f"{value:,}")
    stores = Table(title="local RocksDB stores")
    stores.add_column("folder")
    stores.add_column("size", justify="right")
    for path, size in status.stores.items():
        stores.add_row(path, f"{size / 1024:,.0f} KiB")
    if not status.stores:
        stores.add_row("(none on this machine)", "")
    return Group(topics, lag, stores, status.serving)
