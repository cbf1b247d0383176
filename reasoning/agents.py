"""The multi-agent reasoning chain over an LLM: specialists propose steps, a critic reviews, a final step consolidates.

Each specialist sees the item and the steps before its own (chain of thought across agents). The critic checks
every step against the item text and the other steps; a flagged step is redone once with the critic's remark.
Every answer is validated against its pydantic model; an invalid one is asked again with the validation error
fed back, and after ``retries`` re-asks the item fails with ``InvalidOutput``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from models.item_text import build_item_text
from reaseq.contracts import (
    AttributesStep,
    AudienceStep,
    CatalogItem,
    Critique,
    KnowledgeChain,
    NeedsStep,
    SummaryStep,
    UsageStep,
)
from reasoning.prompts import Message, PromptSet

Answer = TypeVar("Answer", bound=BaseModel)
SPECIALISTS: dict[str, type[BaseModel]] = {
    "attributes": AttributesStep,
    "usage": UsageStep,
    "audience": AudienceStep,
    "needs": NeedsStep,
}


class InvalidOutput(ValueError):
    """The model's answer for one role failed validation after every retry."""

    def __init__(self, role: str, error: str, answer: str) -> None:
        super().__init__(f"{role}: {error}")
        self.role = role
        self.answer = answer


class Backend(Protocol):
    async def complete(self, messages: list[Message], schema: type[BaseModel]) -> str: ...


def item_text(item: CatalogItem) -> str:
    """The product as the agents read it: the same text the semantic IDs are built from, plus the price."""
    text = build_item_text(item.title, item.description, item.brand, item.categories, max_chars=2000)
    return text if item.price is None else f"{text}; price {item.price:.2f}"


def render_steps(steps: dict[str, BaseModel]) -> str:
    return "\n".join(f"{name}: {step.model_dump_json()}" for name, step in steps.items())


class ChainOfAgents:
    def __init__(self, backend: Backend, prompts: PromptSet, retries: int = 2) -> None:
        self.backend = backend
        self.prompts = prompts
        self.retries = retries

    async def reason(self, item: CatalogItem) -> tuple[KnowledgeChain, list[str]]:
        """The item's chain and the critic's remarks that led to revisions."""
        text = item_text(item)
        steps: dict[str, BaseModel] = {}
        for role, model in SPECIALISTS.items():
            steps[role] = await self._ask(self.prompts.messages(role, text, render_steps(steps)), model, role)
        critique = await self._ask(self.prompts.messages("critic", text, render_steps(steps)), Critique, "critic")
        remarks = [] if critique.consistent else [f"{p.step}: {p.problem}" for p in critique.problems]
        for problem in [] if critique.consistent else critique.problems:
            earlier = {role: step for role, step in steps.items() if role != problem.step}
            feedback = f"A reviewer found this problem in your previous answer; fix it: {problem.problem}"
            messages = self.prompts.messages(problem.step, text, render_steps(earlier), feedback)
            steps[problem.step] = await self._ask(messages, SPECIALISTS[problem.step], problem.step)
        summary = await self._ask(self.prompts.messages("summary", text, render_steps(steps)), SummaryStep, "summary")
        return KnowledgeChain(**steps, summary=summary), remarks  # type: ignore[arg-type]

    async def _ask(self, messages: list[Message], model: type[Answer], role: str) -> Answer:
        return await ask(self.backend, messages, model, role, self.retries)


async def ask(backend: Backend, messages: list[Message], model: type[Answer], role: str, retries: int) -> Answer:
    """One validated answer for ``role``; an invalid one is asked again with the error, ``retries`` times at most,
    and then raises ``InvalidOutput``."""
    answer, error = "", ""
    for _ in range(retries + 1):
        answer = await backend.complete(messages, model)
        try:
            # strict=False accepts raw control characters inside strings, which grammar-constrained decoders
            # can emit; everything else about the answer is checked by the model
            return model.model_validate(json.loads(answer, strict=False))
        except json.JSONDecodeError as invalid:
            error = f"not valid JSON: {invalid}"
        except ValidationError as invalid:
            error = json.dumps(invalid.errors(include_url=False, include_context=False), default=str)[:1500]
            messages = [
                *messages,
                {"role": "assistant", "content": answer[:4000]},
                {
                    "role": "user",
                    "content": f"That answer is invalid: {error}. Answer again with one JSON object that matches the schema.",
                },
            ]
    raise InvalidOutput(role, error, answer)


class LLMReasoner:
    """``ChainOfAgents`` over a served LLM, for the enrichment worker: items of a batch run concurrently."""

    backend = "vllm"

    def __init__(self, chain: ChainOfAgents, model: str, concurrency: int) -> None:
        self.chain = chain
        self.model = model
        self.prompt_version = chain.prompts.version
        self._slots = asyncio.Semaphore(concurrency)

    def observe(self, items: Sequence[object]) -> None:
        """The LLM needs no catalog vocabulary."""

    async def reason(self, items: Sequence[CatalogItem]) -> list[object]:
        return list(await asyncio.gather(*(self._one(item) for item in items), return_exceptions=True))

    async def _one(self, item: CatalogItem) -> tuple[KnowledgeChain, list[str]]:
        async with self._slots:
            return await self.chain.reason(item)
