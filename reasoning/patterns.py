"""SCoTER's Generate-Validate-Mine: which reasoning structure predicts users' next items best, found from data.

Generate: for every validation user, one chain per structure and window from the reasoning backend. Validate:
retrieve the ``k`` items whose knowledge vectors are closest to the chain's target vector (history excluded) and
score the chain by whether the user's validation item (never the test item) is among them. Mine: group chains
by structure and window, rank by mean Recall@k, and keep the best as the versioned pattern library, with the
figures that justified it. Apply: fill the best pattern for any history, giving ordered step texts and vectors.

Both steps ask the reasoner for a whole batch of chains at once (``ChainReasoner.chains``), so an LLM backend can
write them concurrently and embed them in one go. A chain the backend could not write (an LLM's answers that
stayed invalid) is a miss in Validate and is counted per candidate (``PatternScore.failed``); it never stops mining.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from reaseq.progress import progress_bar
from reasoning.user_reasoner import STRUCTURES, WINDOWS, Structure, UserChain

PATTERNS_FILE = "patterns.json"
REASONING_DIR = "reasoning"  # inside a model version: the pattern library and the item labels it is filled from


class ChainReasoner(Protocol):
    backend: str  # "embedded" or "vllm"
    prompt_version: str | None  # the LLM backend's prompt set and its hash
    model: str | None  # the LLM backend's model, known once it has written a chain

    def chain(self, history: Sequence[int], structure: Structure, window: int) -> UserChain: ...

    def chains(self, histories: Sequence[Sequence[int]], structure: Structure, window: int) -> list[UserChain | None]:
        """One chain per history, None where the backend failed to write one."""
        ...


class PatternScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    structure: tuple[str, ...]
    window: int
    recall: float  # Recall@k of the chains' target retrieval on validation items
    users: int
    failed: int = 0  # chains the backend could not write, scored as misses


class PatternLibrary(BaseModel):
    """Mined patterns, best first; ``version`` hashes the patterns and how they were scored.

    ``backend`` is the reasoner the chains came from, and the one that must fill the pattern near-line: "embedded"
    (chains from knowledge labels) or "vllm" (an LLM's, with ``prompt_version`` and ``llm_model``). Offline, a "vllm" pattern fills
    only ``TrainConfig.llm_fill_users`` examples per split part; the others have no steps.
    """

    model_config = ConfigDict(frozen=True)

    version: str
    backend: str
    k: int
    prompt_version: str | None = None
    llm_model: str | None = None
    patterns: list[PatternScore]  # kept: the best ones
    candidates: list[PatternScore]  # every structure and window that was validated, best first

    @property
    def best(self) -> PatternScore:
        return self.patterns[0]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / PATTERNS_FILE).write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, directory: Path) -> PatternLibrary:
        return cls.model_validate_json((directory / PATTERNS_FILE).read_text())


def mine_patterns(
    reasoner: ChainReasoner,
    item_vectors: np.ndarray,
    histories: Sequence[Sequence[int]],
    targets: Sequence[int],
    k: int = 20,
    keep: int = 3,
    structures: Sequence[Structure] = STRUCTURES,
    windows: Sequence[int] = WINDOWS,
) -> PatternLibrary:
    """Generate every structure and window for every (history, validation target), validate, and mine."""
    unit = item_vectors / np.linalg.norm(item_vectors, axis=1, keepdims=True).clip(min=1e-12)
    users = len(histories)
    scores = []
    for window in windows:
        for structure in progress_bar(structures, f"generate and validate (window {window})"):
            chains = reasoner.chains(histories, structure, window)
            written = [row for row, chain in enumerate(chains) if chain is not None]
            targets_of = [chain.target for chain in chains if chain is not None]
            found = retrieve(unit, np.stack(targets_of), [histories[row] for row in written], k) if written else []
            hits = sum(targets[row] in top for row, top in zip(written, found, strict=True))
            scores.append(
                PatternScore(
                    structure=structure,
                    window=window,
                    recall=round(hits / max(users, 1), 5),
                    users=users,
                    failed=users - len(written),
                )
            )
    ranked = sorted(scores, key=lambda score: (-score.recall, len(score.structure)))  # ties: the shorter chain
    described = [s.model_dump() for s in ranked] + [reasoner.backend, reasoner.prompt_version, reasoner.model, k]
    digest = hashlib.sha256(json.dumps(described).encode()).hexdigest()[:12]
    return PatternLibrary(
        version=f"patterns-{digest}",
        backend=reasoner.backend,
        k=k,
        prompt_version=reasoner.prompt_version,
        llm_model=reasoner.model,
        patterns=ranked[:keep],
        candidates=ranked,
    )


def retrieve(
    unit_items: np.ndarray, queries: np.ndarray, histories: Sequence[Sequence[int]], k: int, chunk: int = 1024
) -> list[list[int]]:
    """Top-``k`` items by cosine similarity to each query, the query's history excluded."""
    found: list[list[int]] = []
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ unit_items.T
        for row, history in enumerate(histories[start : start + chunk]):
            scores[row, [item for item in history if 0 <= item < scores.shape[1]]] = -np.inf
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        found.extend(top.tolist())
    return found


def apply_pattern(
    reasoner: ChainReasoner, pattern: PatternScore, histories: Sequence[Sequence[int]]
) -> list[UserChain | None]:
    """The pattern filled for each history (None where the backend failed to write the chain)."""
    return reasoner.chains(histories, pattern.structure, pattern.window)
