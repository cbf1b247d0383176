"""The LLM user reasoner over a real vLLM server (its own environment, a tiny random model built here): SCoTER's
Generate-Validate-Mine end to end, invalid answers retried and counted, and the interest worker holding a batch
while the server is unreachable. The random model writes gibberish, so these check structure, not meaning."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from infra.ports import free_port
from infra.vllm import VLLMServer
from models.text_encoder import TextEncoder
from reaseq.contracts import InterestRequest, UserReasoning, utcnow
from reaseq.settings import Settings
from reasoning.agents import InvalidOutput
from reasoning.llm import ChatBackend
from reasoning.llm_user_reasoner import LLMUserReasoner
from reasoning.patterns import REASONING_DIR, PatternLibrary, mine_patterns
from reasoning.user_reasoner import ItemLabels, Structure, UserChain
from tests.conftest import LLM_API_KEY
from tests.support import TINY_TRAINING
from tests.test_train import write_lcrec
from training.train import TrainConfig, train
from workers.interests import InterestModel, InterestWorker, reasoning_of

pytestmark = pytest.mark.integration

STRUCTURES: tuple[Structure, ...] = (("history", "target"), ("needs", "attributes", "target"))
WINDOW = 2
HISTORIES = [[0, 1, 2], [3, 4], [5, 1, 0]]
TARGETS = [3, 5, 2]
TITLES = [
    "Trail running shoes",
    "Merino hiking socks",
    "Insulated water bottle",
    "Camping stove",
    "Gas canister",
    "Headlamp",
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(device="cpu")


@pytest.fixture(scope="module")
def labels(encoder: TextEncoder) -> ItemLabels:
    kinds = {0: ["running shoes"], 1: ["socks"], 2: ["bottles"], 3: ["stoves"], 4: ["fuel"], 5: ["torches"]}
    goes_with = {0: ["socks"], 1: ["hiking boots"], 3: ["fuel"], 4: ["stoves"], 5: ["batteries"]}
    traits = {0: ["lightweight"], 2: ["insulated", "hikers"], 3: ["compact", "campers"], 5: ["waterproof"]}
    vocabulary = sorted({label for table in (kinds, goes_with, traits) for names in table.values() for label in names})
    vectors = dict(zip(vocabulary, encoder.encode(vocabulary), strict=True))
    return ItemLabels(
        {"history": kinds, "needs": goes_with, "attributes": traits},
        dict(enumerate(TITLES)),
        vectors,
        encoder.dimension,
    )


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per chat call to the LLM: the number of messages it sent."""
    sent: list[int] = []
    complete = ChatBackend.complete

    async def counted(self: ChatBackend, messages: list[dict[str, str]], schema: type) -> str:  # type: ignore[type-arg]
        sent.append(len(messages))
        return await complete(self, messages, schema)

    monkeypatch.setattr(ChatBackend, "complete", counted)
    return sent


def with_llm(tmp_path: Path, server: VLLMServer, **overrides: object) -> Settings:
    fields = {
        "state_dir": tmp_path,
        "llm_url": server.base_url,
        "llm_api_key": SecretStr(LLM_API_KEY),
        "llm_model": server.name,
        "llm_max_tokens": 1024,
        "llm_concurrency": 4,
    }
    return Settings().model_copy(update={**fields, **overrides})


class Recording(LLMUserReasoner):
    """Keeps every batch of chains that mining asked for."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.batches: list[list[UserChain | None]] = []

    def chains(self, histories: Sequence[Sequence[int]], structure: Structure, window: int) -> list[UserChain | None]:
        batch = super().chains(histories, structure, window)
        self.batches.append(batch)
        return batch


def item_vectors(encoder: TextEncoder) -> np.ndarray:
    return encoder.encode(TITLES)


def test_mining_with_the_llm_writes_every_step_and_embeds_it(
    tmp_path: Path, llm: VLLMServer, labels: ItemLabels, encoder: TextEncoder
) -> None:
    reasoner = Recording(labels, encoder, with_llm(tmp_path, llm))
    library = mine_patterns(
        reasoner, item_vectors(encoder), HISTORIES, TARGETS, k=2, structures=STRUCTURES, windows=(WINDOW,)
    )

    assert (
        library.backend == "vllm"
        and library.prompt_version == reasoner.prompt_version
        and library.prompt_version.startswith("v1-")
    )
    assert {score.structure for score in library.candidates} == set(STRUCTURES)
    assert all(score.users == len(HISTORIES) and score.failed == 0 for score in library.candidates)
    assert PatternLibrary.model_validate_json(library.model_dump_json()) == library
    assert [batch[0].structure for batch in reasoner.batches if batch[0]] == list(STRUCTURES) and reasoner.failed == 0
    for chain in (chain for batch in reasoner.batches for chain in batch):
        assert chain is not None and chain.window == WINDOW
        assert (
            len(chain.texts) == len(chain.structure) == chain.vectors.shape[0]
            and chain.vectors.shape[1] == encoder.dimension
        )
        assert all(
            text.startswith(f"{step}: ") and len(text) > len(step) + 2
            for step, text in zip(chain.structure, chain.texts, strict=True)
        )
        assert np.allclose(chain.vectors, encoder.encode(chain.texts), atol=1e-4)  # each step's own embedding
        assert np.array_equal(chain.target, chain.vectors[-1])


def test_invalid_answers_are_retried_counted_and_mining_still_completes(
    tmp_path: Path, llm: VLLMServer, labels: ItemLabels, encoder: TextEncoder, calls: list[int]
) -> None:
    # Without constrained decoding the random model's text is not JSON: every answer is invalid.
    reasoner = LLMUserReasoner(
        labels, encoder, with_llm(tmp_path, llm, llm_guided=False, llm_max_tokens=32, llm_retries=1)
    )
    library = mine_patterns(
        reasoner, item_vectors(encoder), HISTORIES, TARGETS, k=2, structures=STRUCTURES, windows=(WINDOW,)
    )

    assert all(score.failed == len(HISTORIES) and score.recall == 0.0 for score in library.candidates)
    assert reasoner.failed == len(HISTORIES) * len(STRUCTURES)
    assert len(calls) == reasoner.failed * 2  # each chain's first step: asked, then asked once more
    with pytest.raises(InvalidOutput, match=r"^history: not valid JSON"):
        reasoner.chain(HISTORIES[0], STRUCTURES[0], WINDOW)


def test_chains_that_share_leading_steps_ask_them_once(
    tmp_path: Path, llm: VLLMServer, labels: ItemLabels, encoder: TextEncoder, calls: list[int]
) -> None:
    shared: tuple[Structure, ...] = (("history", "target"), ("history", "needs", "target"))
    reasoner = Recording(labels, encoder, with_llm(tmp_path, llm))
    mine_patterns(reasoner, item_vectors(encoder), HISTORIES, TARGETS, k=2, structures=shared, windows=(WINDOW,))

    # per user: history once, then each structure's remaining steps (target; needs, target)
    assert reasoner.failed == 0 and len(calls) == len(HISTORIES) * 4
    short, long = reasoner.batches
    for first, second in zip(short, long, strict=True):
        assert first is not None and second is not None
        assert second.texts[0] == first.texts[0] and np.allclose(second.vectors[0], first.vectors[0], atol=1e-5)


def test_filling_with_another_model_than_mined_is_logged(
    tmp_path: Path, labels: ItemLabels, encoder: TextEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings().model_copy(
        update={"state_dir": tmp_path, "llm_url": "http://127.0.0.1:9/v1", "llm_model": "served-now"}
    )
    with caplog.at_level("WARNING", logger="reasoning.llm_user_reasoner"):
        LLMUserReasoner(labels, encoder, settings, mined_with="served-now")
        assert not caplog.records
        LLMUserReasoner(labels, encoder, settings, mined_with="mined-then")
    assert [record.getMessage() for record in caplog.records] == ["filling a pattern mined with another model"]


def test_the_interest_worker_holds_a_batch_while_the_llm_is_unreachable(
    tmp_path: Path, llm: VLLMServer, labels: ItemLabels, encoder: TextEncoder
) -> None:
    settings = with_llm(tmp_path, llm, llm_breaker_cooldown_s=0.5, llm_timeout_s=5.0)
    library = mine_patterns(
        LLMUserReasoner(labels, encoder, settings),
        item_vectors(encoder),
        HISTORIES[:1],
        TARGETS[:1],
        k=2,
        structures=STRUCTURES[:1],
        windows=(WINDOW,),
    )
    reasoner = LLMUserReasoner(labels, encoder, settings)
    reasoner.url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: the server is down
    item_ids = [f"item-{index}" for index in range(len(TITLES))]
    model = InterestModel(
        "v", None, {item: index for index, item in enumerate(item_ids)}, item_ids, encoder, library, reasoner
    )  # type: ignore[arg-type]
    requests = [
        InterestRequest(
            user_id=f"u{row}", history_version=1, item_ids=[item_ids[i] for i in history], requested_at=utcnow()
        )
        for row, history in enumerate(HISTORIES)
    ]
    worker = InterestWorker(settings, bootstrap="unused")

    async def hold_then_answer() -> list[UserReasoning]:
        task = asyncio.create_task(worker._reasoning(model, requests))
        await asyncio.sleep(5.0)
        assert not task.done() and worker.breaker.opened >= 1  # held, not dropped
        reasoner.url = llm.base_url  # the server answers again
        return await asyncio.wait_for(task, timeout=300)

    try:
        reasoning = asyncio.run(hold_then_answer())
    finally:
        worker.table.close()
        worker.late.close()
    assert [steps.user_id for steps in reasoning] == ["u0", "u1", "u2"]
    for steps in reasoning:
        assert tuple(steps.structure) == library.best.structure and steps.pattern_version == library.version
        assert (
            len(steps.steps) == len(steps.step_vectors) == len(steps.structure)
            and len(steps.step_vectors[0]) == encoder.dimension
        )


def test_training_with_the_llm_reasoner_mines_fills_a_bounded_sample_and_the_version_fills_near_line(
    tmp_path: Path, llm: VLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REASEQ_LLM_URL", llm.base_url)  # training takes the server from the environment's settings
    monkeypatch.setenv("REASEQ_LLM_API_KEY", LLM_API_KEY)
    monkeypatch.setenv("REASEQ_LLM_CONCURRENCY", "8")
    monkeypatch.setenv("REASEQ_LLM_MAX_TOKENS", "1024")
    write_lcrec(tmp_path / "tiny", n_items=40, n_users=20, n_events=240)
    side = {"knowledge": True, "reasoning": "structured", "beyond_log": False}
    fields = {**TINY_TRAINING, "ranker": {**TINY_TRAINING["ranker"], "side": side}, "epochs": 1}  # type: ignore[dict-item]
    config = TrainConfig.model_validate(
        {"dataset": tmp_path / "tiny", **fields, "user_reasoner": "llm", "pattern_users": 2, "llm_fill_users": 3}
    )
    version = train(config, tmp_path / "store", tmp_path / "state")

    library = PatternLibrary.load(version / REASONING_DIR)
    assert (
        library.backend == "vllm" and library.prompt_version and all(score.users == 2 for score in library.candidates)
    )
    assert library.llm_model == llm.name  # asked of the server, as the settings name none
    side_inputs = json.loads((version / "metrics.json").read_text())["side_inputs"]
    assert side_inputs["examples_with_steps"] == [3, 3, 3]  # the bound, per part; the others have no steps

    model = InterestModel.load(
        version,
        Settings().model_copy(
            update={"llm_url": llm.base_url, "llm_api_key": SecretStr(LLM_API_KEY), "state_dir": tmp_path / "worker"}
        ),
    )
    assert isinstance(model.reasoner, LLMUserReasoner) and model.reasoner.prompt_version == library.prompt_version
    assert model.reasoner.mined_with == library.llm_model
    request = InterestRequest(user_id="u", history_version=1, item_ids=model.item_ids[:3], requested_at=utcnow())
    worker = InterestWorker(Settings().model_copy(update={"state_dir": tmp_path / "worker"}), bootstrap="unused")
    try:
        (steps,) = reasoning_of(model, [request], worker.late)
    finally:
        worker.table.close()
        worker.late.close()
    assert tuple(steps.structure) == library.best.structure and steps.pattern_version == library.version
    assert len(steps.step_vectors) == len(steps.structure) and len(steps.step_vectors[0]) == model.encoder.dimension
