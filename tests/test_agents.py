"""The reasoning chain's logic without a server: validation retries, the critic's revisions, the circuit breaker,
the embedded reasoner and the knowledge vectors. A scripted backend stands in for the LLM here only; the real
vLLM server is exercised by the integration tests."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import BaseModel

from infra.synthetic import generate
from models.text_encoder import TextEncoder
from reaseq.contracts import CatalogItem, KnowledgeChain, Season
from reasoning.agents import ChainOfAgents, InvalidOutput
from reasoning.breaker import CircuitBreaker
from reasoning.embedded_reasoner import EmbeddedReasoner
from reasoning.knowledge import knowledge_vectors, step_text
from reasoning.prompts import Message, PromptSet
from tests.support import ANSWERS

ITEM = CatalogItem(
    item_id="jacket-1",
    title="Trail shell jacket",
    description="A waterproof nylon shell for hiking in the rain.",
    brand="Copperleaf",
    categories=["Outdoors", "Jackets"],
    event_time=datetime(2026, 1, 1, tzinfo=UTC),
)


class ScriptedBackend:
    """Answers by schema name from a script; records every conversation it was sent."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.calls: list[tuple[str, list[Message]]] = []

    async def complete(self, messages: list[Message], schema: type[BaseModel]) -> str:
        self.calls.append((schema.__name__, messages))
        queue = self.script.get(schema.__name__)
        return queue.pop(0) if queue else json.dumps(ANSWERS[schema.__name__])


def run(chain: ChainOfAgents) -> tuple[KnowledgeChain, list[str]]:
    return asyncio.run(chain.reason(ITEM))


def test_chain_runs_the_roles_in_order_and_builds_a_valid_chain() -> None:
    backend = ScriptedBackend({})
    chain, remarks = run(ChainOfAgents(backend, PromptSet()))
    assert [name for name, _ in backend.calls] == [
        "AttributesStep",
        "UsageStep",
        "AudienceStep",
        "NeedsStep",
        "Critique",
        "SummaryStep",
    ]
    assert chain.attributes.materials == ["nylon"] and chain.usage.seasons == [Season.AUTUMN] and remarks == []
    needs_prompt = backend.calls[3][1][-1]["content"]
    assert "Trail shell jacket" in needs_prompt and '"hikers"' in needs_prompt  # later agents see earlier steps


def test_invalid_answers_are_retried_with_the_error_then_fail() -> None:
    backend = ScriptedBackend({"UsageStep": ['{"rationale": "x", "scenarios": [], "seasons": ["monsoon"]}']})
    chain, _ = run(ChainOfAgents(backend, PromptSet(), retries=1))
    retry = [messages for name, messages in backend.calls if name == "UsageStep"][1]
    assert "invalid" in retry[-1]["content"] and "monsoon" in retry[-2]["content"]  # error and bad answer fed back
    assert chain.usage.scenarios == ["hiking"]

    always_bad = ScriptedBackend({"NeedsStep": ["not json"] * 3})
    with pytest.raises(InvalidOutput) as failed:
        run(ChainOfAgents(always_bad, PromptSet(), retries=2))
    assert failed.value.role == "needs" and failed.value.answer == "not json"
    assert sum(name == "NeedsStep" for name, _ in always_bad.calls) == 3


def test_the_critic_sends_a_flagged_step_back_with_its_remark() -> None:
    critique = {"consistent": False, "problems": [{"step": "audience", "problem": "nothing says children"}]}
    backend = ScriptedBackend({"Critique": [json.dumps(critique)]})
    _, remarks = run(ChainOfAgents(backend, PromptSet()))
    assert remarks == ["audience: nothing says children"]
    redo = [messages for name, messages in backend.calls if name == "AudienceStep"][1]
    assert "nothing says children" in redo[-1]["content"]


def test_prompt_versions_name_folder_and_content(tmp_path) -> None:  # type: ignore[no-untyped-def]
    version = PromptSet().version
    assert version.startswith("v1-") and len(version) == 11
    with pytest.raises(FileNotFoundError, match="lacks"):
        PromptSet("v1", root=tmp_path)


def test_breaker_opens_after_failures_waits_and_closes_on_success() -> None:
    breaker = CircuitBreaker(failures=2, cooldown_s=0.2)
    breaker.failure(RuntimeError("down"))
    assert not breaker.is_open
    breaker.failure(RuntimeError("down"))
    assert breaker.is_open and breaker.opened == 1
    started = time.monotonic()
    asyncio.run(breaker.wait())
    assert time.monotonic() - started >= 0.15 and not breaker.is_open
    breaker.failure(RuntimeError("still down"))
    assert breaker.cooldown_s == pytest.approx(0.8)  # doubled on each opening
    breaker.success()
    assert breaker.failures == 0 and breaker.cooldown_s == pytest.approx(0.2)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(device="cpu")


def test_embedded_reasoner_fills_the_schema_from_the_item_text(encoder: TextEncoder) -> None:
    world = generate(120, 5, 10, seed=2)
    reasoner = EmbeddedReasoner(encoder)
    reasoner.observe(world.items)
    assert "hydrating" in reasoner.vocabulary.attributes and reasoner.vocabulary.kinds
    outcomes = asyncio.run(reasoner.reason([ITEM, *world.items[:5]]))
    chain, _remarks = outcomes[0]  # type: ignore[misc]
    assert isinstance(chain, KnowledgeChain) and chain.attributes.materials == ["nylon"]
    assert set(chain.attributes.attributes) <= set(
        ["trail", "shell", "jacket", "waterproof", "nylon", "hiking", "rain"]
    ) | {"shell"}
    assert "Trail shell jacket" in chain.summary.summary and "(0." in chain.attributes.rationale
    for item, (other, _) in zip(world.items[:5], outcomes[1:]):  # type: ignore[misc]
        assert other.needs.substitutes and item.title in other.summary.summary


def test_embedded_reasoner_ignores_catalog_categories_too_long_to_be_labels(encoder: TextEncoder) -> None:
    pasted = "Precision shaped grain abrasive that cuts fast with less pressure and lasts longer"  # seen in Scientific
    items = [ITEM.model_copy(update={"item_id": f"x{i}", "categories": ["Abrasives", pasted]}) for i in range(3)]
    reasoner = EmbeddedReasoner(encoder)
    reasoner.observe(items)
    assert reasoner.vocabulary.kinds == ("Abrasives",)
    assert all(isinstance(outcome, tuple) for outcome in asyncio.run(reasoner.reason(items)))


def test_knowledge_vectors_are_one_per_step_and_a_normalised_fusion(encoder: TextEncoder) -> None:
    chain, _ = asyncio.run(ChainOfAgents(ScriptedBackend({}), PromptSet()).reason(ITEM))
    steps, fused = knowledge_vectors(encoder, ["trail shell jacket"], [chain])
    assert steps.shape == (1, 5, 384) and fused.shape == (1, 384)
    assert np.linalg.norm(fused[0]) == pytest.approx(1.0, abs=1e-5)
    assert step_text("needs", chain.needs) == "needs; complements: boots; substitutes: rain poncho"
