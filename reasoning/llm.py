"""An OpenAI-compatible chat server (vLLM) asked for JSON that matches a pydantic model's schema.

With ``guided`` (the default) the schema goes in ``response_format``, which vLLM enforces by constrained decoding;
the answer is still validated here, because a schema cannot express every rule of the model. Transport failures,
timeouts, server errors and a refused API key raise ``BackendUnavailable`` so the caller's circuit breaker can tell
them apart from a bad answer (and waits, rather than dead-lettering items for a key an operator must fix).
"""

from __future__ import annotations

import asyncio
import logging

import openai
from pydantic import BaseModel, SecretStr

from reasoning.prompts import Message

log = logging.getLogger(__name__)

REFUSED = "the LLM server refused the API key (REASEQ_LLM_API_KEY)"


class BackendUnavailable(RuntimeError):
    """The LLM server did not answer (connection refused, timeout, 5xx)."""


class ChatBackend:
    def __init__(
        self,
        base_url: str,
        model: str,
        timeout_s: float = 60.0,
        max_tokens: int = 512,
        guided: bool = True,
        api_key: SecretStr | None = None,
    ) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.guided = guided
        self._client = _client(base_url, api_key, timeout_s)

    async def complete(self, messages: list[Message], schema: type[BaseModel]) -> str:
        """The raw text of one answer (validation is the caller's)."""
        extra = {}
        if self.guided:
            extra["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
            }
        try:
            response = await self._client.chat.completions.create(  # type: ignore[call-overload]  # plain dicts
                model=self.model,
                messages=messages,
                max_tokens=self.max_tokens,
                temperature=0.0,
                **extra,
            )
        except (openai.AuthenticationError, openai.PermissionDeniedError) as error:
            raise BackendUnavailable(f"{REFUSED}: {error}") from error
        except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError) as error:
            raise BackendUnavailable(f"{type(error).__name__}: {error}") from error
        return response.choices[0].message.content or ""

    async def healthy(self) -> bool:
        try:
            await self._client.models.list()
        except openai.OpenAIError:
            return False
        return True

    async def close(self) -> None:
        await self._client.close()


def _client(base_url: str, api_key: SecretStr | None, timeout_s: float) -> openai.AsyncOpenAI:
    # the OpenAI client requires a key; a server started without --api-key ignores the one sent
    key = api_key.get_secret_value() if api_key is not None else "unused"
    return openai.AsyncOpenAI(base_url=base_url, api_key=key, timeout=timeout_s, max_retries=0)


async def first_model(base_url: str, timeout_s: float = 600.0, api_key: SecretStr | None = None) -> str:
    """The first model the server lists, waiting for the server to come up (a worker may start before it) or for its
    key to be accepted (said in the log)."""
    client = _client(base_url, api_key, 10.0)
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while True:
            try:
                return (await client.models.list()).data[0].id
            except openai.OpenAIError as error:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
                    log.error(f"{REFUSED}; waiting", extra={"url": base_url, "error": str(error)})
                await asyncio.sleep(2.0)
    finally:
        await client.close()
