"""Pipeline health and throughput over time, sampled in a background thread.

Every ``interval_s`` the sampler reads the exact end offsets of the key topics into a bounded ring (the page draws
records/s per topic from consecutive samples) and refreshes each component's health: the broker, the stream
workers' and the asynchronous workers' consumer lag, Triton, the LLM backend. Requests read the last snapshot, so
a slow or unreachable broker never stalls the page.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from dashboard.probes import Health, HealthState, llm_health, pipeline_lag, triton_health
from kafka_adapter.clients import KafkaException
from kafka_adapter.control import active_generation
from kafka_adapter.offsets import exact_end_offsets, list_partitions
from reaseq.runfiles import ComponentReport, stack_processes
from reaseq.settings import Settings
from reaseq.topics import (
    DEAD_LETTERS,
    EVENTS,
    INTERESTS,
    ITEMS,
    KNOWLEDGE,
    USER_FEATURES,
    TopicSpec,
    topic_name,
)
from training.registry import has_interest_model, newest_version

log = logging.getLogger(__name__)

THROUGHPUT_TOPICS: tuple[TopicSpec, ...] = (ITEMS, EVENTS, USER_FEATURES, KNOWLEDGE, INTERESTS, DEAD_LETTERS)


@dataclass(frozen=True)
class Component:
    name: str
    state: HealthState
    detail: str
    lag: dict[str, int] | None = None


def lag_component(name: str, lag: dict[str, int]) -> Component:
    behind = sum(lag.values())
    return Component(name, "busy" if behind else "ok", f"{behind:,} records behind" if behind else "caught up", lag)


def health_component(name: str, health: Health) -> Component:
    return Component(name, health.state, health.detail)


class HealthSampler:
    """Samples end offsets and component health every ``interval_s`` into a ring of ``ring_size`` samples."""

    def __init__(self, settings: Settings, bootstrap: str, interval_s: float = 2.0, ring_size: int = 180) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.interval_s = interval_s
        self.topics = {topic_name(settings, spec): spec.name for spec in THROUGHPUT_TOPICS}
        self._samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=ring_size)
        self._components: list[Component] = []
        self._generation = 1
        self._checked_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def snapshot(self) -> dict[str, Any]:
        """The last health check and the throughput series: records/s per topic between consecutive samples."""
        with self._lock:
            samples = list(self._samples)
            components, generation, checked_at = self._components, self._generation, self._checked_at
        points = [
            {"t": t, "rates": {name: max(0.0, (now[name] - before.get(name, 0)) / (t - t0)) for name in now}}
            for (t0, before), (t, now) in itertools.pairwise(samples)
        ]
        return {
            "bootstrap": self.bootstrap,
            "generation": generation,
            "checked_at": checked_at,
            "components": [vars(c) for c in components],
            "throughput": {
                "interval_s": self.interval_s,
                "topics": list(self.topics.values()),
                "totals": samples[-1][1] if samples else {},
                "points": points,
            },
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._sample()
            except Exception:  # the page must keep sampling; its "checked" time shows the gap
                log.exception("health sample failed")
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def _sample(self) -> None:
        now = time.time()
        try:
            generation = active_generation(self.settings, self.bootstrap)
            ends = exact_end_offsets(self.bootstrap, list_partitions(self.bootstrap, self.topics))
            totals = dict.fromkeys(self.topics.values(), 0)
            for (topic, _), (_, end) in ends.items():
                totals[self.topics[topic]] += end
            components = self._check(generation, totals)
        except KafkaException as error:
            log.warning("broker not reachable", extra={"error": str(error)})
            components = [
                Component("broker", "down", f"{self.bootstrap} not reachable: {error}"),
                health_component("LLM backend", llm_health(self.settings)),
            ]
            processes = stack_processes(self.settings)
            with self._lock:
                self._components = (
                    components if processes is None else with_processes(components, processes, self._generation)
                )
                self._checked_at = now
            return
        with self._lock:
            self._samples.append((now, totals))
            self._components, self._generation, self._checked_at = components, generation, now

    def _check(self, generation: int, totals: dict[str, int]) -> list[Component]:
        settings, bootstrap = self.settings, self.bootstrap
        names = {
            settings.app_name(generation): "stream workers",
            settings.worker_group("enrichment"): "enrichment worker",
            settings.worker_group("interests"): "interest worker",
        }
        components = [Component("broker", "ok", f"{bootstrap} reachable, serving generation {generation}")]
        lags = pipeline_lag(settings, bootstrap, generation)
        components += [lag_component(names[group], lag) for group, lag in lags.items()]
        held = sum(lags[settings.worker_group("interests")].values())
        if held and newest_version(settings.model_store, having=has_interest_model) is None:
            # The interest worker leaves requests in the topic until a model exists: held work, not a backlog.
            detail = f"{held:,} requests held until a model is trained (`reaseq train`, or `reaseq up --train`)"
            components = [
                Component(c.name, "warn", detail, c.lag) if c.name == "interest worker" else c for c in components
            ]
        components.append(health_component("Triton", triton_health(settings)))
        components.append(health_component("LLM backend", llm_health(settings)))
        dead = totals[DEAD_LETTERS.name]
        components.append(Component("dead letters", "warn" if dead else "ok", f"{dead:,} records rejected in total"))
        processes = stack_processes(settings)
        return components if processes is None else with_processes(components, processes, generation)


def _process_names(component: str, processes: dict[str, ComponentReport], generation: int) -> list[str]:
    """The local stack's processes behind one component of the page."""
    if component == "stream workers":
        return [name for name in processes if name.startswith("w") and name.endswith(f".g{generation}")]
    return [name for name in processes if name == PROCESS_OF.get(component)]


PROCESS_OF = {"broker": "broker", "enrichment worker": "enrich", "interest worker": "interests", "Triton": "triton"}


def with_processes(
    components: list[Component], processes: dict[str, ComponentReport], generation: int
) -> list[Component]:
    """``components`` as the local stack's processes qualify them: one whose process is gone is down, whatever its lag
    says, and a process's restarts show in its detail; processes without a component of their own (the page, the
    supervisor) are added when they are not running."""
    shown: set[str] = set()
    qualified = []
    for component in components:
        names = _process_names(component.name, processes, generation)
        shown.update(names)
        notes = "; ".join(
            f"{name}: {processes[name].describe()}"
            for name in names
            if processes[name].state != "running" or processes[name].restarts
        )
        if any(processes[name].state != "running" for name in names):
            qualified.append(Component(component.name, "down", f"{notes} ({component.detail})", component.lag))
        else:
            qualified.append(
                Component(
                    component.name,
                    component.state,
                    f"{component.detail}; {notes}" if notes else component.detail,
                    component.lag,
                )
            )
    others = [process for name, process in processes.items() if name not in shown and process.state != "running"]
    return qualified + [Component(process.name, "down", process.describe()) for process in others]
