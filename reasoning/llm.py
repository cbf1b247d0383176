"""An OpenAI-compatible chat server (vLLM) asked for JSON that matches a pydantic model's schema.

With ``guided`` (the default) the schema goes in ``response_format``, which vLLM enforces by constrained decoding;
the answer is still validated here, because a schema cannot express every rule of the model. Transport failures,
timeouts and server errors raise ``BackendUnavailable`` so the caller's circuit breaker can tell them apart
from a bad answer.
"""

from __future__ import annotations

import asyncio

import openai
from pydantic import BaseModel

from reasoning.prompts import Message


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
    ) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.guided = guided
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", timeout=timeout_s, max_retries=0)

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


async def first_model(base_url: str, timeout_s: float = 600.0) -> str:
    """The first model the server lists, waiting for the server to come up (a worker may start before it)."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=10)
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while True:
            try:
                return (await client.models.list()).data[0].id
            except openai.OpenAIError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(2.0)
    finally:
        await client.close()
