"""The one typed settings object, read from the environment.

Defaults run the embedded setup: a tansu broker started by ``infra`` on a free loopback port,
state under ``.state/``. Set ``KAFKA_BOOTSTRAP`` to point every component at an external Apache Kafka.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SaslLogin(NamedTuple):
    """The SASL login every Kafka client of the process uses."""

    mechanism: str
    username: str
    password: str


class Settings(BaseSettings):
    """Every knob of the system; environment variables are ``REASEQ_<FIELD>`` unless noted."""

    model_config = SettingsConfigDict(env_prefix="REASEQ_", extra="ignore", frozen=True)

    kafka_bootstrap: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP", "REASEQ_KAFKA_BOOTSTRAP"),
        description="host:port list of an external Kafka; unset means the embedded broker.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How every Kafka client connects; SASL_* need a username and password."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism of the SASL_* protocols."
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user every Kafka client logs in as.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="Its password (never logged).")
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="CA bundle that signs the brokers' certificates (SSL, SASL_SSL); unset: the system's."
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="Client certificate, for brokers that ask for one."
    )
    kafka_ssl_keyfile: Path | None = Field(default=None, description="Its private key.")
    topic_prefix: str = Field(default="reaseq.", description="Namespace for every topic.")
    app_id: str = Field(default="reaseq", description="Faust application id and consumer group stem.")
    partitions: int = Field(default=4, ge=1, description="Partitions of every keyed topic (co-partitioned).")
    replication_factor: int = Field(default=1, ge=1)
    source_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, description="Retention of items/events.")
    dead_letter_retention_ms: int = Field(default=30 * 24 * 3600 * 1000)
    state_dir: Path = Field(default=Path(".state"), description="Local RocksDB stores and run files.")
    max_message_bytes: int = Field(default=256 * 1024, description="Larger payloads are dead-lettered.")
    history_length: int = Field(default=50, ge=1, description="Recent interactions kept per user.")
    pending_limit: int = Field(
        default=10_000, ge=1, description="Interactions kept per unknown item; beyond it they are dead-lettered."
    )
    dedup_window: int = Field(default=512, ge=1, description="Recent event ids remembered per user.")
    interest_debounce_s: float = Field(
        default=2.0, ge=0.0, description="Quiet time per user before an interest request."
    )
    rebalance_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Consumer-group rebalance timeout; a join waits this long on the embedded broker.",
    )
    session_timeout_s: float = Field(default=10.0, gt=0, description="A dead worker's partitions move after this.")
    producer_linger_ms: int = Field(
        default=10, ge=0, description="Workers wait this long to fill a produce batch: fewer, larger requests."
    )
    worker_web_port: int | None = Field(default=None, description="Faust web/metrics port; unset disables it.")
    web_host: str = Field(
        default="127.0.0.1", description="Address the operator web page binds; beyond loopback it needs web_token."
    )
    web_token: SecretStr | None = Field(
        default=None,
        description="Token the operator page asks for (Authorization: Bearer, or ?token= once in a browser); required "
        "when web_host is not a loopback address.",
    )
    web_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the operator web page (reaseq web); unset picks a free one."
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address every worker process's Prometheus exporter binds."
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Prometheus /metrics port of each worker process: unset picks a free one per process (recorded in "
        "<state_dir>/run/metrics/<process>.port); a fixed one suits one process per host (a container); 0 disables it.",
    )
    model_store: Path = Field(default=Path("model_store"), description="Versioned model directories (reaseq train).")
    triton_host: str = Field(default="127.0.0.1", description="Address Triton binds and clients dial.")
    triton_http_port: int | None = Field(default=None, description="Triton HTTP port; unset picks a free one.")
    triton_grpc_port: int | None = Field(default=None, description="Triton gRPC port; unset picks a free one.")
    triton_metrics_port: int | None = Field(default=None, description="Triton Prometheus port; unset picks one.")
    serving_exclude_history: bool = Field(default=True, description="Top-k never repeats a user's history items.")
    serving_beam_size: int = Field(default=20, ge=1, le=100, description="Beam width of top-k generation.")
    serving_threads: int = Field(default=2, ge=1, description="Torch threads of the Triton ranker instance.")
    serving_max_candidates: int = Field(
        default=1000, ge=1, le=10_000, description="Candidates one rank request may hold; more are refused."
    )
    llm_backend: Literal["embedded", "vllm"] = Field(
        default="embedded", description="Item reasoning: the no-LLM MiniLM reasoner, or an OpenAI-compatible server."
    )
    llm_url: str | None = Field(default=None, description="Base URL of the OpenAI-compatible server (…/v1).")
    llm_api_key: SecretStr | None = Field(
        default=None, description="Bearer key the LLM server asks for (vLLM's --api-key); unset sends none."
    )
    llm_model: str | None = Field(default=None, description="Model name the server serves (default: its first).")
    llm_concurrency: int = Field(default=8, ge=1, description="Items reasoned about at once per enrichment worker.")
    llm_timeout_s: float = Field(default=60.0, gt=0, description="Per LLM call.")
    llm_retries: int = Field(default=2, ge=0, description="Re-asks with the validation error before dead-lettering.")
    llm_max_tokens: int = Field(default=512, ge=16)
    llm_guided: bool = Field(default=True, description="Constrained decoding to each step's JSON schema.")
    llm_breaker_failures: int = Field(default=3, ge=1, description="Failed calls that open the circuit breaker.")
    llm_breaker_cooldown_s: float = Field(default=2.0, gt=0, description="First cool-down; doubles up to 60 s.")
    prompt_version: str = Field(default="v1", description="Folder of reasoning/prompts to use.")
    enrich_batch: int = Field(default=32, ge=1, description="Enrichment requests fetched per batch.")
    interest_batch: int = Field(
        default=32, ge=1, description="Interest requests fetched per batch: one inference call."
    )
    supervisor_backoff_max_s: float = Field(
        default=60.0, gt=0, description="The local stack restarts a process that exited after 1 s, doubling up to this."
    )
    supervisor_stable_s: float = Field(
        default=60.0, gt=0, description="A process that ran this long counts as healthy again."
    )
    supervisor_max_failures: int = Field(
        default=5, ge=1, description="Exits in a row without a healthy run after which a process is left down (failed)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Settings:
        if self.kafka_security_protocol != "PLAINTEXT" and self.kafka_bootstrap is None:
            raise ValueError(
                f"kafka_security_protocol {self.kafka_security_protocol} needs KAFKA_BOOTSTRAP: the embedded broker "
                "takes plaintext on loopback only"
            )
        if self.kafka_security_protocol.startswith("SASL") and self.kafka_sasl_login is None:
            raise ValueError(
                f"kafka_security_protocol {self.kafka_security_protocol} needs REASEQ_KAFKA_SASL_USERNAME and "
                "REASEQ_KAFKA_SASL_PASSWORD"
            )
        if not self.kafka_uses_tls and self.kafka_ssl_files:
            raise ValueError("kafka_ssl_* files are read only with kafka_security_protocol SSL or SASL_SSL")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("kafka_ssl_certfile and kafka_ssl_keyfile go together")
        return self

    @property
    def kafka_uses_tls(self) -> bool:
        return self.kafka_security_protocol.endswith("SSL")

    @property
    def kafka_sasl_login(self) -> SaslLogin | None:
        """The login, where the protocol is a SASL one and both its parts are set (the check above requires them)."""
        if not self.kafka_security_protocol.startswith("SASL"):
            return None
        if not self.kafka_sasl_username or self.kafka_sasl_password is None:
            return None
        return SaslLogin(
            self.kafka_sasl_mechanism, self.kafka_sasl_username, self.kafka_sasl_password.get_secret_value()
        )

    @property
    def kafka_ssl_files(self) -> dict[Literal["cafile", "certfile", "keyfile"], str]:
        """The TLS files that are set, by role."""
        files = {
            "cafile": self.kafka_ssl_cafile,
            "certfile": self.kafka_ssl_certfile,
            "keyfile": self.kafka_ssl_keyfile,
        }
        return {role: str(path) for role, path in files.items() if path is not None}  # type: ignore[misc]

    def topic(self, name: str) -> str:
        """Full name of one of the project's topics."""
        return f"{self.topic_prefix}{name}"

    def worker_group(self, worker: str) -> str:
        """Consumer group of an asynchronous worker (``enrichment``, ``interests``), shared by its replicas."""
        return f"{self.app_id}-{worker}"

    def app_name(self, generation: int) -> str:
        """Faust app id of one state generation; a replay builds the next generation beside the live one."""
        return f"{self.app_id}-g{generation}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
