"""The distilled ranker's inputs beyond the history: item knowledge, mined reasoning steps, beyond-log items.

Built offline for every training, validation and test example of a leave-one-out split, the same way the
serving side builds them live, so nothing the ranker reads at training time is unavailable at serving time:

- item knowledge: each item's reasoning chain (published knowledge, or the embedded reasoner's) and its fused
  knowledge vector;
- reasoning steps: SCoTER's Generate-Validate-Mine over the validation examples picks the best chain structure
  (saved as ``patterns.json``), which is then filled for every example's history (with the LLM user reasoner, for
  a bounded random sample of each part's examples: every chain costs one LLM call per step);
- beyond-log items: inferred by interest models *cross-fitted* over two halves of the users, so an example's
  items always come from a model that never trained on that user (otherwise the model would have memorised
  the very targets the ranker learns from, and the ranker would learn to trust it too much).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np

from models.ranker_inputs import SideInputs, UserContext
from models.text_encoder import TextEncoder
from models.tokenizer import SemanticIdTokenizer
from reaseq.contracts import KnowledgeChain
from reaseq.progress import progress_bar
from reaseq.settings import Settings
from reasoning.embedded_reasoner import EmbeddedReasoner
from reasoning.knowledge import knowledge_vectors
from reasoning.llm_user_reasoner import LLMUserReasoner
from reasoning.patterns import ChainReasoner, PatternLibrary, apply_pattern, mine_patterns
from reasoning.user_reasoner import EmbeddedUserReasoner, ItemLabels
from training.datasets import SequenceData, Split
from training.interest_training import FutureSplit, InterestTrainConfig, future_split, infer_all, train_interest_model
from training.metrics import set_metrics

UserReasonerKind = Literal["embedded", "llm"]


@dataclass
class SideData:
    """Per split part, one context per example; the item vectors and what was mined, for the version directory."""

    train: list[UserContext]
    valid: list[UserContext]
    test: list[UserContext]
    item_vectors: np.ndarray | None = None
    patterns: PatternLibrary | None = None
    labels: ItemLabels | None = None  # what the near-line reasoner needs to fill the pattern
    report: dict[str, object] = field(default_factory=dict)


def item_knowledge(data: SequenceData, encoder: TextEncoder) -> dict[int, KnowledgeChain]:
    """Each item's reasoning chain: published knowledge where the data has it, else the embedded reasoner's.

    Offline datasets have no knowledge topic, so their items are reasoned about here with the no-LLM embedded
    reasoner, the same one the enrichment worker runs by default.
    """
    chains = dict(data.knowledge or {})
    missing = [index for index in sorted(data.catalog or {}) if index not in chains]
    if missing and data.catalog:
        reasoner = EmbeddedReasoner(encoder)
        reasoner.observe(list(data.catalog.values()))
        for start in progress_bar(range(0, len(missing), 512), "item knowledge", "batch"):
            chunk = missing[start : start + 512]
            for index, (chain, _) in zip(chunk, reasoner.reason_batch([data.catalog[i] for i in chunk]), strict=True):
                chains[index] = chain
    return chains


def fused_item_vectors(data: SequenceData, chains: dict[int, KnowledgeChain], encoder: TextEncoder) -> np.ndarray:
    """Knowledge vectors by item index [I, d]; zeros for items without text or knowledge."""
    indices = [index for index in sorted(chains) if data.item_text and index in data.item_text]
    vectors = np.zeros((data.num_items, encoder.dimension), dtype=np.float32)
    for start in progress_bar(range(0, len(indices), 1024), "knowledge vectors", "batch"):
        chunk = indices[start : start + 1024]
        _, fused = knowledge_vectors(encoder, [data.item_text[i] for i in chunk], [chains[i] for i in chunk])  # type: ignore[index]
        vectors[chunk] = fused
    return vectors


def build_side_data(
    side: SideInputs,
    data: SequenceData,
    split: Split,
    tokenizer: SemanticIdTokenizer,
    encoder: TextEncoder,
    knowledge: Callable[[], dict[int, KnowledgeChain]],
    interests: InterestTrainConfig,
    pattern_users: int | None,
    seed: int,
    user_reasoner: UserReasonerKind = "embedded",
    llm_fill_users: int | None = None,
) -> SideData:
    """Contexts for every example of ``split`` with the side inputs ``side`` asks for."""
    parts = (split.train, split.valid, split.test)
    steps: list[list[np.ndarray | None]] = [[None] * len(part) for part in parts]
    beyond: list[list[list[int]]] = [[[] for _ in part.targets] for part in parts]
    result = SideData([], [], [])
    if side.knowledge or side.reasoning != "none":
        if not data.item_text:
            raise ValueError(f"{data.name} has no item text: knowledge and reasoning side inputs need it")
        chains = knowledge()
        result.item_vectors = fused_item_vectors(data, chains, encoder)
        result.report["items_with_knowledge"] = len(chains)
        if side.reasoning != "none":
            steps, result.patterns, result.labels = _reasoning_steps(
                data, chains, result.item_vectors, split, encoder, pattern_users, seed, user_reasoner, llm_fill_users
            )
            result.report["pattern"] = result.patterns.best.model_dump()
            result.report["examples_with_steps"] = [sum(vectors is not None for vectors in part) for part in steps]
    if side.beyond_log:
        beyond, result.report["beyond_log"] = _cross_fitted_interests(
            data, split, tokenizer, interests, side.max_beyond_log
        )
    result.train, result.valid, result.test = (
        [UserContext(step, items) for step, items in zip(part_steps, part_items, strict=True)]
        for part_steps, part_items in zip(steps, beyond, strict=True)
    )
    return result


def _reasoning_steps(
    data: SequenceData,
    chains: dict[int, KnowledgeChain],
    item_vectors: np.ndarray,
    split: Split,
    encoder: TextEncoder,
    pattern_users: int | None,
    seed: int,
    user_reasoner: UserReasonerKind,
    llm_fill_users: int | None,
) -> tuple[list[list[np.ndarray | None]], PatternLibrary, ItemLabels]:
    """Mine the pattern with the chosen reasoner and fill it per example: every example with the embedded one; with
    the LLM one (server from the environment's ``Settings``), ``llm_fill_users`` random examples per part, the
    others (and any chain the LLM failed) left without steps rather than given steps from another vector space."""
    titles = {index: item.title for index, item in (data.catalog or {}).items()}
    labels = ItemLabels.build(chains, titles, encoder)
    reasoner: ChainReasoner = EmbeddedUserReasoner(labels)
    if user_reasoner == "llm":
        reasoner = LLMUserReasoner(labels, encoder, Settings())
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(split.valid))[:pattern_users]
    library = mine_patterns(
        reasoner, item_vectors, [split.valid.histories[i] for i in rows], [split.valid.targets[i] for i in rows]
    )
    filled: list[list[np.ndarray | None]] = []
    for part in (split.train, split.valid, split.test):
        bound = llm_fill_users if reasoner.backend != "embedded" else None
        chosen = sorted(rng.permutation(len(part))[:bound].tolist())
        steps: list[np.ndarray | None] = [None] * len(part)
        for row, chain in zip(
            chosen, apply_pattern(reasoner, library.best, [part.histories[i] for i in chosen]), strict=True
        ):
            steps[row] = None if chain is None else chain.vectors
        filled.append(steps)
    return filled, library, labels


def _fold(user: str) -> int:
    return hashlib.blake2b(user.encode(), digest_size=2).digest()[0] % 2


def _cross_fitted_interests(
    data: SequenceData, split: Split, tokenizer: SemanticIdTokenizer, config: InterestTrainConfig, count: int
) -> tuple[list[list[list[int]]], dict[str, object]]:
    """Beyond-log items of every example from the interest model of the other half of the users, and a report: each
    fold model's training, and per split part the share of examples whose target is among their items (a weak
    interest model shows there first, as a segment that only adds noise; the test share is never trained on)."""
    futures = future_split(data)
    parts = {"train": split.train, "valid": split.valid, "test": split.test}
    inferred: dict[str, list[list[int]]] = {name: [[] for _ in part.targets] for name, part in parts.items()}
    folds = []
    for fold in (0, 1):
        keep = [i for i, user in enumerate(futures.users) if _fold(user) != fold]
        half = FutureSplit(
            [futures.users[i] for i in keep], [futures.histories[i] for i in keep], [futures.futures[i] for i in keep]
        )
        model, training = train_interest_model(tokenizer, half, config)
        history = cast(list[dict[str, float]], training["history"])
        stopped = {key: training[key] for key in ("epochs_run", "best_epoch", "converged", "wall_s")}
        folds.append({"users": len(keep), "loss": history[-1]["loss"], **stopped})
        for name, part in parts.items():
            rows = [i for i, user in enumerate(part.users) if _fold(user) == fold]
            for row, found in zip(
                rows, infer_all(model, [part.histories[i] for i in rows], batch_size=256), strict=True
            ):
                inferred[name][row] = [item for item in found if item >= 0][:count]
    hits = {
        name: round(set_metrics(inferred[name], [[target] for target in part.targets], count)[f"hit_rate@{count}"], 4)
        if len(part)
        else 0.0
        for name, part in parts.items()
    }
    return list(inferred.values()), {"folds": folds, "target_among_items": hits}
