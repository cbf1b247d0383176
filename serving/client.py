"""Clients of Triton: the ranking client (one call per user, over gRPC or HTTP, with timeouts and retries), and the
administrative calls that ask which ranker version is ready and load versions.

Retries cover transport failures and Triton's "unavailable" answers (e.g. during a restart); a malformed request
is not retried and raises ``RankRequestError`` with Triton's message.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from reaseq.contracts import RankRequest, RankResponse, RankSource, ScoredItem
from reaseq.runfiles import TritonEndpoints
from training.registry import MODEL_NAME

OUTPUTS = ("ITEM_IDS", "SCORES", "UNKNOWN_IDS", "SOURCE", "MODEL_VERSION")
Protocol = Literal["grpc", "http"]


class RankRequestError(ValueError):
    """Triton rejected the request itself (bad input): retrying cannot help."""


class RankUnavailableError(RuntimeError):
    """No answer after every retry."""


class RankClient:
    def __init__(
        self,
        url: str,
        protocol: Protocol = "grpc",
        timeout_s: float = 2.0,
        retries: int = 3,
        backoff_s: float = 0.2,
    ) -> None:
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._module = triton_grpc if protocol == "grpc" else triton_http
        if protocol == "grpc":
            self._client = triton_grpc.InferenceServerClient(url)
        else:
            self._client = triton_http.InferenceServerClient(
                url, connection_timeout=timeout_s, network_timeout=timeout_s
            )

    def rank(self, user_id: str, candidates: list[str] | None = None, k: int = 10) -> RankResponse:
        """Scored candidates (best first, unknown ids listed apart), or the top ``k`` when none are given."""
        request = RankRequest(user_id=user_id, candidates=candidates, k=k)
        return self.send(request)

    def send(self, request: RankRequest) -> RankResponse:
        inputs = self._inputs(request)
        outputs = [self._module.InferRequestedOutput(name) for name in OUTPUTS]
        for attempt in range(self.retries + 1):
            try:
                result = self._infer(inputs, outputs)
                return _parse(request.user_id, result)
            except InferenceServerException as error:
                if _is_client_error(error):
                    raise RankRequestError(error.message()) from None
                if attempt == self.retries:
                    raise RankUnavailableError(f"ranker unavailable after {attempt + 1} tries: {error}") from None
            time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def ready(self) -> bool:
        try:
            return bool(self._client.is_model_ready(MODEL_NAME))
        except InferenceServerException:
            return False

    def close(self) -> None:
        self._client.close()

    def _infer(self, inputs: list, outputs: list) -> object:
        if self.protocol == "grpc":
            return self._client.infer(MODEL_NAME, inputs, outputs=outputs, client_timeout=self.timeout_s)
        return self._client.infer(MODEL_NAME, inputs, outputs=outputs)

    def _inputs(self, request: RankRequest) -> list:
        tensors = {
            "USER_ID": np.array([[request.user_id.encode()]], dtype=np.object_),
            "K": np.array([[request.k]], dtype=np.int32),
        }
        if request.candidates is not None:
            tensors["CANDIDATES"] = np.array([[c.encode() for c in request.candidates]], dtype=np.object_).reshape(
                1, -1
            )
        inputs = []
        for name, array in tensors.items():
            tensor = self._module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return inputs


def _parse(user_id: str, result: object) -> RankResponse:
    def strings(name: str) -> list[str]:
        array = result.as_numpy(name)  # type: ignore[attr-defined]
        return [] if array is None else [value.decode() for value in array.reshape(-1)]

    scores = result.as_numpy("SCORES").reshape(-1).tolist()  # type: ignore[attr-defined]
    return RankResponse(
        user_id=user_id,
        items=[ScoredItem(item_id=item, score=score) for item, score in zip(strings("ITEM_IDS"), scores, strict=True)],
        unknown=strings("UNKNOWN_IDS"),
        source=RankSource(strings("SOURCE")[0]),
        model_version=strings("MODEL_VERSION")[0],
    )


def _is_client_error(error: InferenceServerException) -> bool:
    status = str(error.status() or "")
    return "INVALID_ARG" in status or status == "400" or "invalid" in (error.message() or "").lower()


def admin_client(endpoints: TritonEndpoints, timeout_s: float = 300.0) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(
        endpoints.http_url, connection_timeout=timeout_s, network_timeout=timeout_s
    )


def served_version(endpoints: TritonEndpoints) -> int | None:
    """The ranker version Triton reports ready, if any."""
    index = admin_client(endpoints, timeout_s=5.0).get_model_repository_index()
    ready = [
        int(entry["version"]) for entry in index if entry.get("name") == MODEL_NAME and entry.get("state") == "READY"
    ]
    return max(ready, default=None)
