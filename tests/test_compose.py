"""compose.yaml, checked without a Docker engine: the Compose Specification schema and the project's own rules.

The schema is the copy that check-jsonschema ships (``vendor.compose-spec``). Each check returns its problems,
so the mutation tests can show that every check rejects the mistake it exists for.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema
from jsonschema.validators import validator_for
from pydantic import AliasChoices, TypeAdapter, ValidationError

from reaseq.settings import Settings

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "compose.yaml"
KAFKA = "kafka"
WORKER = "stream-worker"
TRITON = "triton"
IDS = "ids"
# Services whose processes read reaseq.settings.Settings from their environment.
PROJECT_SERVICES = ("provision", WORKER, TRITON, IDS)
ENV_ANCHOR = "x-reaseq-env"

Compose = dict[str, Any]


def load_compose() -> Compose:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@cache
def compose_validator() -> Any:
    schema = get_builtin_schema("vendor.compose-spec")
    cls = validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def settings_env_names() -> dict[str, str]:
    """Environment name (upper case) -> Settings field, as pydantic-settings resolves them."""
    prefix = Settings.model_config.get("env_prefix", "")
    names: dict[str, str] = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, AliasChoices):
            choices = [choice for choice in alias.choices if isinstance(choice, str)]
        elif isinstance(alias, str):
            choices = [alias]
        else:
            choices = [f"{prefix}{field_name}"]
        names.update({choice.upper(): field_name for choice in choices})
    return names


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment in either Compose form (mapping or KEY=VALUE list), values as strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def parse_listeners(value: str) -> dict[str, tuple[str, int]]:
    """Kafka listener list ``NAME://host:port,...`` -> {NAME: (host, port)}."""
    listeners = {}
    for entry in value.split(","):
        name, address = entry.strip().split("://", 1)
        host, port = address.rsplit(":", 1)
        listeners[name] = (host, int(port))
    return listeners


def volume_targets(service: dict[str, Any]) -> dict[str, str | None]:
    """Mount target -> source (None for an anonymous volume), for short and long volume syntax."""
    targets: dict[str, str | None] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            targets[volume["target"]] = volume.get("source")
            continue
        parts = volume.split(":")
        if len(parts) == 1:
            targets[parts[0]] = None
        else:
            targets[parts[1]] = parts[0]
    return targets


def command_args(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else list(command)


def check_schema(compose: Compose) -> list[str]:
    errors = compose_validator().iter_errors(compose)
    return [f"/{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in errors]


def check_env_names(compose: Compose) -> list[str]:
    """Project services set Settings names only, all of the shared anchor; nobody sets an unknown REASEQ_ name."""
    known = settings_env_names()
    prefix = Settings.model_config.get("env_prefix", "").upper()
    shared = {key: str(value) for key, value in compose.get(ENV_ANCHOR, {}).items()}
    problems = [] if shared else [f"{ENV_ANCHOR} is missing or empty"]
    for name, service in compose.get("services", {}).items():
        env = environment(service)
        project = name in PROJECT_SERVICES
        problems += [
            f"{name}: {key} is not a Settings field"
            for key in env
            if key.upper() not in known and (project or key.upper().startswith(prefix))
        ]
        if project and not shared.items() <= env.items():
            problems.append(f"{name}: environment does not include {ENV_ANCHOR}")
    return problems


def check_settings(compose: Compose) -> list[str]:
    """Each project service's environment builds a valid Settings that reads every value it sets."""
    names = settings_env_names()
    problems = []
    for name in PROJECT_SERVICES:
        env = environment(compose["services"][name])
        with mock.patch.dict(os.environ, env, clear=True):
            try:
                settings = Settings()
            except ValidationError as exc:
                problems.append(f"{name}: {exc}")
                continue
        for key, value in env.items():
            field = names.get(key.upper())
            if field is None:
                continue
            expected = TypeAdapter(Settings.model_fields[field].annotation).validate_python(value)
            if getattr(settings, field) != expected:
                problems.append(f"{name}: {key}={value!r} was not read into Settings.{field}")
    return problems


def check_kafka(compose: Compose) -> list[str]:
    """KRaft single node wired consistently, no topic auto-creation, and clients bootstrapping in-network."""
    kafka = compose["services"].get(KAFKA)
    if kafka is None:
        return [f"no {KAFKA} service"]
    env = environment(kafka)
    problems = []
    if env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "").lower() != "false":
        problems.append("KAFKA_AUTO_CREATE_TOPICS_ENABLE must be 'false': topics are provisioned")
    if {"broker", "controller"} - set(env.get("KAFKA_PROCESS_ROLES", "").split(",")):
        problems.append("KAFKA_PROCESS_ROLES must be broker,controller")
    listeners = parse_listeners(env["KAFKA_LISTENERS"])
    advertised = parse_listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    voter = f"{env['KAFKA_NODE_ID']}@{KAFKA}:{listeners[controller][1]}"
    if voter not in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","):
        problems.append(f"KAFKA_CONTROLLER_QUORUM_VOTERS lacks this node's controller {voter}")
    if "healthcheck" not in kafka:
        problems.append(f"{KAFKA} has no healthcheck: provision waits for it")
    internal = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    expected = f"{KAFKA}:{listeners[internal][1]}"
    if advertised[internal] != (KAFKA, listeners[internal][1]):
        problems.append(f"listener {internal} must be advertised as {expected}")
    for name in PROJECT_SERVICES:
        bootstrap = environment(compose["services"][name]).get("KAFKA_BOOTSTRAP")
        if bootstrap != expected:
            problems.append(f"{name}: KAFKA_BOOTSTRAP={bootstrap!r}, expected {expected!r}")
    return problems


def check_services(compose: Compose) -> list[str]:
    """Start order, the scaled worker with per-replica state, and Triton serving the model store's ranker."""
    services = compose["services"]
    problems = []
    if command_args(services["provision"]) != ["provision"]:
        problems.append("provision must run `reaseq provision`")
    if services["provision"].get("depends_on", {}).get(KAFKA, {}).get("condition") != "service_healthy":
        problems.append("provision must wait for a healthy kafka")
    worker = services[WORKER]
    if command_args(worker) != ["worker"]:
        problems.append(f"{WORKER} must run `reaseq worker`")
    if worker.get("depends_on", {}).get("provision", {}).get("condition") != "service_completed_successfully":
        problems.append(f"{WORKER} must start after provisioning succeeded")
    if worker.get("deploy", {}).get("replicas", 1) < 2:
        problems.append(f"{WORKER} needs deploy.replicas >= 2")
    if "container_name" in worker:
        problems.append(f"{WORKER}: container_name prevents replicas")
    state_dir = environment(worker).get("REASEQ_STATE_DIR")
    if state_dir not in volume_targets(worker):
        problems.append(f"{WORKER}: no volume at REASEQ_STATE_DIR={state_dir}")
    elif volume_targets(worker)[state_dir] is not None:
        problems.append(f"{WORKER}: a named or bind state volume is shared by all replicas' RocksDB stores")
    triton = services[TRITON]
    if command_args(triton) != ["serve"]:
        problems.append(f"{TRITON} must run `reaseq serve`")
    triton_env = environment(triton)
    if triton_env.get("REASEQ_TRITON_HOST") != "0.0.0.0":
        problems.append(f"{TRITON} must listen on all interfaces (REASEQ_TRITON_HOST=0.0.0.0) to be reachable")
    store = triton_env.get("REASEQ_MODEL_STORE")
    if store not in volume_targets(triton) or volume_targets(triton)[store] is None:
        problems.append(f"{TRITON}: no named volume at REASEQ_MODEL_STORE={store}")
    if "/v2/health/ready" not in str(triton.get("healthcheck", {}).get("test")):
        problems.append(f"{TRITON} healthcheck must probe /v2/health/ready")
    if triton.get("deploy", {}).get("replicas", 1) < 2:
        problems.append(f"{TRITON} needs deploy.replicas >= 2 (serving scales out)")
    if volume_targets(triton).get(str(triton_env.get("REASEQ_STATE_DIR"))) is not None:
        problems.append(f"{TRITON}: a named or bind state volume is shared by all replicas' feature replicas")
    ids = services.get(IDS, {})
    if command_args(ids) != ["ids"]:
        problems.append(f"{IDS} must run `reaseq ids`, the writer of new items' semantic IDs")
    if ids.get("deploy", {}).get("replicas", 1) != 1:
        problems.append(f"{IDS}: one writer per deployment (deploy.replicas 1)")
    return problems


def check_access(compose: Compose) -> list[str]:
    """Every Kafka listener a client reaches asks for a SASL login, and so do the project's clients; Triton (no
    authentication of its own) publishes no host port; the page bound beyond loopback has a token; vLLM a key."""
    services = compose["services"]
    problems = []
    kafka = environment(services[KAFKA])
    controller = kafka["KAFKA_CONTROLLER_LISTENER_NAMES"]
    for entry in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","):
        name, protocol = entry.split(":")
        if name != controller and not protocol.startswith("SASL"):
            problems.append(f"{KAFKA}: listener {name} takes {protocol} clients without a login")
    for name in PROJECT_SERVICES:
        if not environment(services[name]).get("REASEQ_KAFKA_SECURITY_PROTOCOL", "").startswith("SASL"):
            problems.append(f"{name}: its Kafka clients log in with no SASL (REASEQ_KAFKA_SECURITY_PROTOCOL)")
    if services[TRITON].get("ports"):
        problems.append(f"{TRITON}: publishes host ports; it has no authentication (expose them instead)")
    web = services["web"]
    if "0.0.0.0" in command_args(web) and not environment(web).get("REASEQ_WEB_TOKEN"):
        problems.append("web: binds beyond loopback without REASEQ_WEB_TOKEN")
    if "--api-key" not in command_args(services["vllm"]):
        problems.append("vllm: serves without --api-key")
    if not environment(services["enrichment"]).get("REASEQ_LLM_API_KEY"):
        problems.append("enrichment: sends no REASEQ_LLM_API_KEY")
    return problems


CHECKS: dict[str, Callable[[Compose], list[str]]] = {
    "schema": check_schema,
    "env_names": check_env_names,
    "settings": check_settings,
    "kafka": check_kafka,
    "services": check_services,
    "access": check_access,
}


@pytest.mark.parametrize("check", CHECKS)
def test_compose_passes(check: str) -> None:
    assert CHECKS[check](load_compose()) == []


def test_no_version_key() -> None:
    assert "version" not in load_compose()


def test_env_names_derive_from_settings() -> None:
    names = settings_env_names()
    assert names["KAFKA_BOOTSTRAP"] == "kafka_bootstrap"
    assert names["REASEQ_PARTITIONS"] == "partitions"


def _set(path: str, value: Any) -> Callable[[Compose], None]:
    """A mutation setting the value at a /-separated path (services' environments are mappings here)."""
    *parents, leaf = path.split("/")

    def mutate(compose: Compose) -> None:
        node = compose
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return mutate


MUTATIONS: dict[str, tuple[Callable[[Compose], None], str]] = {
    "unknown-service-key": (_set(f"services/{WORKER}/replicas", 2), "schema"),
    "bad-depends-on-condition": (_set(f"services/{WORKER}/depends_on/kafka/condition", "healthy"), "schema"),
    "unknown-top-level-key": (_set("volume", {"kafka-data": None}), "schema"),
    "unknown-reaseq-env": (_set(f"services/{WORKER}/environment/REASEQ_VLLM_URL", "http://vllm:8000/v1"), "env_names"),
    "reaseq-env-on-other-service": (_set("services/vllm/environment/REASEQ_LLM_GPU_LAYERS", "32"), "env_names"),
    "foreign-env-on-project-service": (_set(f"services/{TRITON}/environment/OPENAI_BASE_URL", "x"), "env_names"),
    "env-not-shared": (_set("services/provision/environment", {"KAFKA_BOOTSTRAP": "kafka:9092"}), "env_names"),
    "invalid-setting": (_set(f"services/{WORKER}/environment/REASEQ_PARTITIONS", "0"), "settings"),
    "shadowed-alias": (_set(f"services/{WORKER}/environment/REASEQ_KAFKA_BOOTSTRAP", "other:9092"), "settings"),
    "invalid-log-level": (_set(f"services/{WORKER}/environment/REASEQ_LOG_LEVEL", "LOUD"), "settings"),
    "auto-create-on": (_set(f"services/{KAFKA}/environment/KAFKA_AUTO_CREATE_TOPICS_ENABLE", "true"), "kafka"),
    "bootstrap-host": (_set(f"services/{WORKER}/environment/KAFKA_BOOTSTRAP", "localhost:9092"), "kafka"),
    "bootstrap-external-port": (_set(f"services/{WORKER}/environment/KAFKA_BOOTSTRAP", "kafka:9094"), "kafka"),
    "voters-mismatch": (_set(f"services/{KAFKA}/environment/KAFKA_CONTROLLER_QUORUM_VOTERS", "2@kafka:9093"), "kafka"),
    "single-worker": (_set(f"services/{WORKER}/deploy/replicas", 1), "services"),
    "shared-state-volume": (_set(f"services/{WORKER}/volumes", ["state:/var/lib/reaseq/state"]), "services"),
    "triton-not-serving": (_set(f"services/{TRITON}/command", ["worker"]), "services"),
    "triton-on-loopback": (_set(f"services/{TRITON}/environment/REASEQ_TRITON_HOST", "127.0.0.1"), "services"),
    "model-store-not-mounted": (_set(f"services/{TRITON}/volumes", ["/var/lib/reaseq/state"]), "services"),
    "single-triton": (_set(f"services/{TRITON}/deploy/replicas", 1), "services"),
    "two-id-writers": (_set(f"services/{IDS}/deploy/replicas", 2), "services"),
    "shared-triton-state": (_set(f"services/{TRITON}/volumes", ["state:/var/lib/reaseq/state"]), "services"),
    "no-id-writer": (_set(f"services/{IDS}/command", ["interests"]), "services"),
    "plaintext-listener": (
        _set(
            f"services/{KAFKA}/environment/KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
        ),
        "access",
    ),
    "clients-without-login": (
        _set(f"services/{WORKER}/environment/REASEQ_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        "access",
    ),
    "triton-published": (_set(f"services/{TRITON}/ports", ["8001:8001"]), "access"),
    "page-without-token": (_set("services/web/environment/REASEQ_WEB_TOKEN", ""), "access"),
    "llm-without-key": (_set("services/vllm/command", ["--model", "/models/llm"]), "access"),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_mutation_is_caught(mutation: str) -> None:
    mutate, check = MUTATIONS[mutation]
    compose = copy.deepcopy(load_compose())
    # Aliased anchors load as one shared dict: give each service its own before mutating one.
    for service in compose["services"].values():
        if isinstance(service.get("environment"), dict):
            service["environment"] = dict(service["environment"])
    mutate(compose)
    assert CHECKS[check](compose), f"{check} accepted the mutation {mutation}"
