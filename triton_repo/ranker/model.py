"""Triton Python-backend adapter of the ranker: tensors in, ``serving.ServingRuntime`` calls, tensors out.

Each version folder of the runtime repository holds this file and ``artifact.json`` naming the model directory.
Settings (broker address included) come from the environment that ``infra.triton`` gives the server.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from pydantic import ValidationError

from reaseq.contracts import RankRequest, RankResponse
from reaseq.logs import configure
from reaseq.settings import get_settings
from serving.runtime import ServingRuntime

ARTIFACT_FILE = "artifact.json"
DEFAULT_K = 10


class RequestError(ValueError):
    """A malformed request: answered with an INVALID_ARG error, never a failed batch."""


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        settings = get_settings()
        configure(settings.log_level)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        artifact = json.loads((version_dir / ARTIFACT_FILE).read_text())
        if not settings.kafka_bootstrap:
            raise RuntimeError("KAFKA_BOOTSTRAP is not set: start Triton through infra.triton")
        self.max_candidates = settings.serving_max_candidates
        self.runtime = ServingRuntime(Path(artifact["model_dir"]), settings, settings.kafka_bootstrap)
        self.runtime.start(artifact.get("catch_up_timeout_s", 120.0))

    def execute(self, requests: list) -> list:
        parsed: list[RankRequest | RequestError] = []
        for request in requests:
            try:
                parsed.append(_parse(request, self.max_candidates))
            except RequestError as error:
                parsed.append(error)
        valid = [request for request in parsed if isinstance(request, RankRequest)]
        try:
            answers = iter(self.runtime.rank(valid))
        except Exception as error:  # a failed batch fails its requests, not the server
            message = f"ranking failed: {type(error).__name__}: {error}"
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(message)) for _ in requests]
        return [
            _error(request) if isinstance(request, RequestError) else _response(next(answers)) for request in parsed
        ]

    def finalize(self) -> None:
        self.runtime.close()


def _parse(request: object, max_candidates: int) -> RankRequest:
    users = _strings(request, "USER_ID")
    if users is None or users.shape[0] != 1 or users.size != 1:
        raise RequestError("USER_ID must hold exactly one user id per request; Triton batches concurrent requests")
    candidates = _strings(request, "CANDIDATES")
    if candidates is not None and candidates.size > max_candidates:
        raise RequestError(
            f"CANDIDATES holds {candidates.size} ids, over the maximum of {max_candidates} "
            "(REASEQ_SERVING_MAX_CANDIDATES)"
        )
    k_tensor = pb_utils.get_input_tensor_by_name(request, "K")
    k = DEFAULT_K if k_tensor is None else int(k_tensor.as_numpy().reshape(-1)[0])
    try:
        return RankRequest(
            user_id=_text(users.reshape(-1)[0]),
            candidates=None if candidates is None else [_text(value) for value in candidates.reshape(-1)],
            k=k,
        )
    except ValidationError as error:
        raise RequestError(f"invalid request: {error.errors(include_url=False)}") from None


def _strings(request: object, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _text(value: object) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("ids must be UTF-8 text") from None
    return str(value)


def _response(answer: RankResponse) -> object:
    ids = np.array([[item.item_id.encode() for item in answer.items]], dtype=np.object_).reshape(1, -1)
    scores = np.array([[item.score for item in answer.items]], dtype=np.float32).reshape(1, -1)
    unknown = np.array([[item.encode() for item in answer.unknown]], dtype=np.object_).reshape(1, -1)
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("ITEM_IDS", ids),
            pb_utils.Tensor("SCORES", scores),
            pb_utils.Tensor("UNKNOWN_IDS", unknown),
            pb_utils.Tensor("SOURCE", np.array([[answer.source.value.encode()]], dtype=np.object_)),
            pb_utils.Tensor("MODEL_VERSION", np.array([[answer.model_version.encode()]], dtype=np.object_)),
        ]
    )


def _error(error: RequestError) -> object:
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    triton_error = pb_utils.TritonError(str(error)) if code is None else pb_utils.TritonError(str(error), code)
    return pb_utils.InferenceResponse(error=triton_error)
