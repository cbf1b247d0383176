"""The wire format: one JSON object per record, carrying ``schema_version``.

``decode`` turns any bytes into a contract or a ``ContractError`` whose reason names the dead-letter
category, so every rejection is explained the same way wherever it happens.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from reaseq.contracts import SUPPORTED_SCHEMA_VERSIONS, Contract, DeadLetterReason

M = TypeVar("M", bound=Contract)


class ContractError(ValueError):
    """A record that does not satisfy its contract."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def encode(message: BaseModel) -> bytes:
    """Serialise a contract to its wire bytes."""
    return orjson.dumps(message.model_dump(mode="json"))


def decode_valid(model: type[M], values: Iterable[bytes | None], max_bytes: int) -> Iterator[M]:
    """The values that decode as ``model``, skipping the others (readers of topics whose bad records are
    dead-lettered where they are consumed)."""
    for value in values:
        try:
            yield decode(model, value, max_bytes)
        except ContractError:
            continue


def decode(model: type[M], raw: bytes | None, max_bytes: int) -> M:
    """Parse and validate wire bytes as ``model``; raises ContractError with the reason."""
    if raw is None:
        raise ContractError(DeadLetterReason.MALFORMED_JSON, "empty record (no value)")
    if len(raw) > max_bytes:
        raise ContractError(DeadLetterReason.OVERSIZE, f"{len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ContractError(DeadLetterReason.MALFORMED_JSON, str(exc)) from None
    if not isinstance(body, dict):
        raise ContractError(DeadLetterReason.INVALID, f"expected a JSON object, got {type(body).__name__}")
    version = body.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS or isinstance(version, bool):
        supported = sorted(SUPPORTED_SCHEMA_VERSIONS)
        raise ContractError(
            DeadLetterReason.UNKNOWN_SCHEMA_VERSION, f"schema_version {version!r} is not one of {supported}"
        )
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise ContractError(DeadLetterReason.INVALID, f"{model.__name__}: {details}") from None
