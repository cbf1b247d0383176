"""Health probes of the components an operator watches: the pipeline's consumer lag, Triton and the LLM backend.
The operator page samples them; ``reaseq status`` prints them."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from typing import Literal

from tritonclient.utils import InferenceServerException

from kafka_adapter.offsets import group_lag
from reaseq.runfiles import triton_endpoints
from reaseq.settings import Settings
from reaseq.topics import BY_ITEM, BY_USER, ENRICHMENT_REQUESTS, EVENTS, INTEREST_REQUESTS, ITEMS, topic_name
from serving.client import served_version
from training.registry import ModelRepository


def pipeline_lag(settings: Settings, bootstrap: str, generation: int) -> dict[str, dict[str, int]]:
    """Records each consumer group has not processed yet: the stream workers of ``generation``, and the
    enrichment and interest workers."""
    stream_inputs = [topic_name(settings, spec, generation) for spec in (ITEMS, EVENTS, BY_ITEM, BY_USER)]
    return {
        settings.app_name(generation): group_lag(bootstrap, settings.app_name(generation), stream_inputs),
        settings.worker_group("enrichment"): group_lag(
            bootstrap, settings.worker_group("enrichment"), [topic_name(settings, ENRICHMENT_REQUESTS)]
        ),
        settings.worker_group("interests"): group_lag(
            bootstrap, settings.worker_group("interests"), [topic_name(settings, INTEREST_REQUESTS)]
        ),
    }


HealthState = Literal[
    "ok", "busy", "warn", "down", "off"
]  # fine, working through a backlog, needs a look, failing, not here


@dataclass(frozen=True)
class Health:
    state: HealthState
    detail: str


def llm_health(settings: Settings, timeout_s: float = 3.0) -> Health:
    """Which reasoning backend the enrichment workers use and, for a server, whether it lists its models."""
    if settings.llm_backend == "embedded":
        return Health("ok", "embedded reasoner (no LLM server)")
    if not settings.llm_url:
        return Health("down", "vllm, but REASEQ_LLM_URL is not set")
    try:
        with urllib.request.urlopen(f"{settings.llm_url.rstrip('/')}/models", timeout=timeout_s) as response:
            return Health("ok", f"vllm at {settings.llm_url}: answering (HTTP {response.status})")
    except OSError as error:  # down, refusing or timing out is exactly what the operator asked about
        return Health("down", f"vllm at {settings.llm_url}: not answering: {error}")


def triton_health(settings: Settings) -> Health:
    """Whether Triton (the local stack's, or the one the settings name) answers, and which ranker version it serves."""
    endpoints = triton_endpoints(settings)
    if endpoints is None:
        return Health(
            "off", "not running in the local stack, and none configured (REASEQ_TRITON_*): no recommendations"
        )
    try:
        version = served_version(endpoints)
    except (InferenceServerException, OSError) as error:  # a broken server's error is the health to show
        return Health("down", f"grpc {endpoints.grpc_url}: not answering: {error}")
    if version is None:
        return Health("busy", f"grpc {endpoints.grpc_url}: up, no ranker version ready")
    model_dir = ModelRepository(settings).versions().get(version)  # known where the repository is local
    where = f", {model_dir}" if model_dir else ""
    return Health(
        "ok", f"grpc {endpoints.grpc_url}, metrics {endpoints.metrics_url}: ranker version {version} ready{where}"
    )
