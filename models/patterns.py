"""SCoTER's Generate-Validate-Mine: which reasoning structure predicts users' next items best, found from data.

Generate: for every validation user, one chain per structure and window from the reasoning backend. Validate:
retrieve the ``k`` items whose knowledge vectors are closest to the chain's target vector (history excluded) and
score the chain by whether the user's validation item (never the test item) is among them. Mine: group chains
by structure and window, rank by mean Recall@k, and keep the best as the versioned pattern library, with the
figures that justified it. Apply: fill the best pattern for any history, giving ordered step texts and vectors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict
from tqdm import tqdm

from workers.user_reasoner import STRUCTURES, WINDOWS, Structure, UserChain

PATTERNS_FILE = "patterns.json"
REASONING_DIR = "reasoning"  # inside a model version: the pattern library and the item labels it is filled from


class ChainReasoner(Protocol):
    backend: str

    def chain(self, history: Sequence[int], structure: Structure, window: int) -> UserChain: ...


class PatternScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    structure: tuple[str, ...]
    window: int
    recall: float  # Recall@k of the chains' target retrieval on validation items
    users: int


class PatternLibrary(BaseModel):
    """Mined patterns, best first; ``version`` hashes the patterns and how they were scored."""

    model_config = ConfigDict(frozen=True)

    version: str
    backend: str
    k: int
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
    hits: dict[tuple[Structure, int], int] = {}
    for window in windows:
        for structure in tqdm(structures, desc=f"generate and validate (window {window})", leave=False):
            chains = [reasoner.chain(history, structure, window) for history in histories]
            found = retrieve(unit, np.stack([chain.target for chain in chains]), histories, k)
            hits[(structure, window)] = int(sum(target in row for target, row in zip(targets, found, strict=True)))
    users = len(histories)
    ranked = sorted(
        (PatternScore(structure=s, window=w, recall=round(h / max(users, 1), 5), users=users) for (s, w), h in hits.items()),
        key=lambda score: (-score.recall, len(score.structure)),  # ties: the shorter chain
    )
    digest = hashlib.sha256(json.dumps([s.model_dump() for s in ranked] + [reasoner.backend, k]).encode()).hexdigest()[:12]
    return PatternLibrary(version=f"patterns-{digest}", backend=reasoner.backend, k=k, patterns=ranked[:keep], candidates=ranked)


def retrieve(unit_items: np.ndarray, queries: np.ndarray, histories: Sequence[Sequence[int]], k: int, chunk: int = 1024) -> list[list[int]]:
    """Top-``k`` items by cosine similarity to each query, the query's history excluded."""
    found: list[list[int]] = []
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ unit_items.T
        for row, history in enumerate(histories[start : start + chunk]):
            scores[row, [item for item in history if 0 <= item < scores.shape[1]]] = -np.inf
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        found.extend(top.tolist())
    return found


def apply_pattern(reasoner: ChainReasoner, pattern: PatternScore, histories: Sequence[Sequence[int]]) -> tuple[list[list[str]], np.ndarray]:
    """The best pattern filled for each history: step texts and step vectors [N, steps, d]."""
    chains = [reasoner.chain(history, pattern.structure, pattern.window) for history in histories]
    return [chain.texts for chain in chains], np.stack([chain.vectors for chain in chains]) if chains else np.zeros((0, 0, 0))
