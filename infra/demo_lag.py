"""The demo view's consumer-lag row: what each consumer group has yet to process, and why it waits."""

from __future__ import annotations

from collections.abc import Mapping

from reaseq.settings import Settings

WAITING_FOR_MODEL = "waiting for the first model"


def describe_lag(settings: Settings, lags: Mapping[str, Mapping[str, int]], model_served: bool) -> str:
    """``stream 0, enrichment 0, interests 1,962 (waiting for the first model)`` from ``pipeline_lag``'s records
    behind per group and topic. Until a model is served the interest worker leaves its requests in the topic on
    purpose: their count is then work held for the model, not a worker falling behind."""
    stages = {settings.worker_group("enrichment"): "enrichment", settings.worker_group("interests"): "interests"}
    parts = []
    for group, per_topic in lags.items():
        stage, behind = stages.get(group, "stream"), sum(per_topic.values())
        held = stage == "interests" and behind and not model_served
        parts.append(f"{stage} {behind:,}" + (f" ({WAITING_FOR_MODEL})" if held else ""))
    return ", ".join(parts) or "not measured yet"
