"""SCoTER's Generate over a served LLM: each step of a user's reasoning chain written by an OpenAI-compatible server.

Every step of a structure is one chat call with its own versioned prompt (``reasoning/prompts/<version>/user_*.md``):
the user's recent items (titles and their knowledge labels, oldest first) and the steps written so far go in, and
a short JSON answer ``{"text": ...}`` comes out, validated and asked again with the error like the enrichment
agents' answers (``reasoning.agents.ask``). The chains of a batch are written concurrently (``llm_concurrency`` at
once), then all their step texts are embedded in one encoder call; a chain's target vector is the embedding of
its target step. Chains that share leading steps over the same recent items share those steps' answers (kept in an
LRU memory of ``STEP_MEMORY`` steps): mining asks each prefix of the structures once per user, not once per
structure.

A chain whose answers are still invalid after ``llm_retries`` re-asks fails: ``chains`` gives None for it, logs
it and counts it in ``failed``, so one bad chain never stops mining or a batch; ``chain`` raises
``InvalidOutput``. A server that does not answer raises ``BackendUnavailable`` for the caller to handle (training
stops; the interest worker holds its batch behind its circuit breaker).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import openai
from cachetools import LRUCache
from pydantic import BaseModel, Field

from models.text_encoder import TextEncoder
from reaseq.settings import Settings
from reasoning.agents import InvalidOutput, ask
from reasoning.llm import BackendUnavailable, ChatBackend, first_model
from reasoning.prompts import USER_ROLES, PromptSet
from reasoning.user_reasoner import ItemLabels, Structure, UserChain

log = logging.getLogger(__name__)
STEP_CHARS = 300  # per step: the answer schema's limit, so guided decoding closes the string in time
TITLE_CHARS = 80
LABEL_NAMES = {"history": "kind", "needs": "goes with", "attributes": "attributes"}  # per ItemLabels.SOURCES step
STEP_MEMORY = 100_000  # step answers kept for reuse; enough for mining 3,000 users' structures over two windows


class StepAnswer(BaseModel):
    """One step of a user's chain, as the LLM answers it."""

    text: str = Field(min_length=1, max_length=STEP_CHARS)


class LLMUserReasoner:
    """Chains for any structure and window written by the LLM at ``settings.llm_url``; the LLM backend of Generate."""

    backend = "vllm"

    def __init__(
        self,
        labels: ItemLabels,
        encoder: TextEncoder,
        settings: Settings,
        prompt_folder: str | None = None,
        mined_with: str | None = None,
    ) -> None:
        """``mined_with``: the model that mined the pattern this reasoner fills; filling with another is logged."""
        if not settings.llm_url:
            raise ValueError("the LLM user reasoner needs REASEQ_LLM_URL (e.g. http://127.0.0.1:8000/v1)")
        self.url: str = settings.llm_url
        self.labels = labels
        self.encoder = encoder
        self.settings = settings
        self.prompts = PromptSet(prompt_folder or settings.prompt_version, roles=USER_ROLES)
        self.prompt_version: str | None = self.prompts.version
        self.model = settings.llm_model
        self.mined_with = mined_with
        self.failed = 0  # chains given up on since this reasoner was made
        # (recent items as the prompts show them, structure prefix) -> that prefix's last step
        self.step_memory: LRUCache[tuple[str, Structure], str] = LRUCache(STEP_MEMORY)
        if self.model:
            self._check_model()

    def chain(self, history: Sequence[int], structure: Structure, window: int) -> UserChain:
        """One history's chain; raises ``InvalidOutput`` when the LLM's answers stay invalid."""
        (written,) = self._write_all([history], structure, window)
        if isinstance(written, InvalidOutput):
            raise written
        return self._embed([written], structure, window)[0]

    def chains(self, histories: Sequence[Sequence[int]], structure: Structure, window: int) -> list[UserChain | None]:
        """One chain per history, written concurrently and embedded together; None for each failed chain."""
        written = self._write_all(histories, structure, window)
        failures = [chain for chain in written if isinstance(chain, InvalidOutput)]
        if failures:
            self.failed += len(failures)
            log.warning(
                "user chains given up after retries",
                extra={
                    "failed": len(failures),
                    "chains": len(written),
                    "structure": list(structure),
                    "error": str(failures[0])[:300],
                },
            )
        embedded = iter(
            self._embed([chain for chain in written if not isinstance(chain, InvalidOutput)], structure, window)
        )
        return [None if isinstance(chain, InvalidOutput) else next(embedded) for chain in written]

    def _embed(self, written: list[list[str]], structure: Structure, window: int) -> list[UserChain]:
        if not written:
            return []
        vectors = self.encoder.encode([text for texts in written for text in texts])
        steps = len(structure)
        return [
            UserChain(structure, window, texts, vectors[row * steps : (row + 1) * steps])
            for row, texts in enumerate(written)
        ]

    def _write_all(
        self, histories: Sequence[Sequence[int]], structure: Structure, window: int
    ) -> list[list[str] | InvalidOutput]:
        # Blocking, with its own event loop (callers run it in a thread when they have one): the async HTTP client
        # is bound to the loop it was made in, so each call makes and closes its own.
        return asyncio.run(self._write_concurrently(histories, structure, window))

    async def _write_concurrently(
        self, histories: Sequence[Sequence[int]], structure: Structure, window: int
    ) -> list[list[str] | InvalidOutput]:
        s = self.settings
        chat = ChatBackend(
            self.url, await self._model_name(), s.llm_timeout_s, s.llm_max_tokens, s.llm_guided, s.llm_api_key
        )
        slots = asyncio.Semaphore(s.llm_concurrency)

        async def one(history: Sequence[int]) -> list[str] | InvalidOutput:
            async with slots:
                try:
                    return await self._write(chat, history, structure, window)
                except InvalidOutput as error:
                    return error

        tasks = [asyncio.create_task(one(history)) for history in histories]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:  # the server is gone: stop the other chains before the client closes under them
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            await chat.close()

    async def _write(self, chat: ChatBackend, history: Sequence[int], structure: Structure, window: int) -> list[str]:
        items = self._render(list(history)[-window:])
        texts: list[str] = []
        for depth, step in enumerate(structure, 1):
            key = (items, structure[:depth])
            text = self.step_memory.get(key)
            if text is None:
                messages = self.prompts.messages(f"user_{step}", items, "\n".join(texts))
                answer = await ask(chat, messages, StepAnswer, step, self.settings.llm_retries)
                text = self.step_memory[key] = f"{step}: {answer.text.strip()}"
            texts.append(text)
        return texts

    def _render(self, recent: list[int]) -> str:
        """The recent items as the prompts show them: one numbered line each, title and knowledge labels."""
        lines = []
        for position, item in enumerate(recent, 1):
            known = [
                f"{LABEL_NAMES[step]}: {', '.join(names)}"
                for step in ItemLabels.SOURCES
                if (names := self.labels.labels[step].get(item))
            ]
            title = self.labels.titles.get(item, "untitled item")[:TITLE_CHARS]
            lines.append(f"{position}. {title}" + (f" ({'; '.join(known)})" if known else ""))
        return "\n".join(lines) or "(no items yet)"

    async def _model_name(self) -> str:
        """The configured model, else the first the server lists (asked once)."""
        if self.model is None:
            try:
                self.model = await first_model(
                    self.url, timeout_s=self.settings.llm_timeout_s, api_key=self.settings.llm_api_key
                )
            except openai.OpenAIError as error:
                raise BackendUnavailable(f"{type(error).__name__}: {error}") from error
            self._check_model()
        return self.model

    def _check_model(self) -> None:
        if self.mined_with and self.model != self.mined_with:
            log.warning(
                "filling a pattern mined with another model", extra={"mined_with": self.mined_with, "model": self.model}
            )
