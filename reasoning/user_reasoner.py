"""Reasoning about a user's history step by step: the chains SCoTER's Generate-Validate-Mine draws from.

A chain follows a *structure*: an ordered choice of steps that ends with a target description (what the user
wants next). The steps are

| step | what it says | built from the recent items' knowledge |
| --- | --- | --- |
| ``history`` | history analysis: the product kinds the user keeps choosing, and the latest item | kinds (substitutes) |
| ``needs`` | need inference: what the recent items call for next | complements |
| ``attributes`` | attribute matching: the attributes and audiences the items share | attributes, audiences |
| ``target`` | target description: what to look for next, from the steps before it, in their order | the steps |

The embedded reasoner (no LLM) writes each step from the item knowledge of the user's ``window`` most recent
items, counting labels with more weight on recent items. Each step's vector is the normalised, weighted mean of
the MiniLM embeddings of the labels it names (embedded once per label), so chains for every training prefix
cost no encoder call. The target's vector weighs later steps more, so a structure's order changes its target.
The LLM backend (``reasoning.llm_user_reasoner``) writes the same steps with a served model instead.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.text_encoder import TextEncoder
from reaseq.contracts import KnowledgeChain

STEPS = ("history", "needs", "attributes", "target")
Structure = tuple[str, ...]
STRUCTURES: tuple[Structure, ...] = (
    ("history", "target"),
    ("needs", "target"),
    ("attributes", "target"),
    ("history", "needs", "target"),
    ("needs", "history", "target"),
    ("history", "attributes", "target"),
    ("attributes", "needs", "target"),
    ("history", "attributes", "needs", "target"),
    ("history", "needs", "attributes", "target"),
)
WINDOWS = (3, 8)  # recent items a chain reasons over
LABELS_FILE = "labels.json"
VECTORS_FILE = "label_vectors.npy"
TOP_LABELS = 3


@dataclass(frozen=True)
class UserChain:
    """One reasoning chain for one user: ordered step texts and step vectors [steps, d]."""

    structure: Structure
    window: int
    texts: list[str]
    vectors: np.ndarray

    @property
    def target(self) -> np.ndarray:
        return self.vectors[-1]


class ItemLabels:
    """Per item, the labels of its knowledge that user steps count, and one embedding per distinct label."""

    SOURCES: Mapping[str, tuple[str, ...]] = {
        "history": ("needs.substitutes",),
        "needs": ("needs.complements",),
        "attributes": ("attributes.attributes", "audience.audiences"),
    }

    def __init__(
        self,
        labels: dict[str, dict[int, list[str]]],
        titles: Mapping[int, str],
        vectors: Mapping[str, np.ndarray],
        dimension: int,
    ) -> None:
        self.labels = labels
        self.titles = dict(titles)
        self.vectors = dict(vectors)
        self.dimension = dimension

    @classmethod
    def labels_of(cls, chain: KnowledgeChain) -> dict[str, list[str]]:
        """Per user step, the labels of one item's knowledge that it counts."""
        return {
            step: [label for source in sources for label in _field(chain, source)]
            for step, sources in cls.SOURCES.items()
        }

    @classmethod
    def build(cls, chains: Mapping[int, KnowledgeChain], titles: Mapping[int, str], encoder: TextEncoder) -> ItemLabels:
        labels: dict[str, dict[int, list[str]]] = {step: {} for step in cls.SOURCES}
        for index, chain in chains.items():
            for step, names in cls.labels_of(chain).items():
                labels[step][index] = names
        vocabulary = sorted({label for per_item in labels.values() for names in per_item.values() for label in names})
        vectors = encoder.encode(vocabulary) if vocabulary else np.zeros((0, encoder.dimension), dtype=np.float32)
        return cls(labels, titles, dict(zip(vocabulary, vectors, strict=True)), vectors.shape[1])

    def add(self, index: int, chain: KnowledgeChain, title: str, encoder: TextEncoder) -> None:
        """Cover one more item (one published after training): its labels and title; labels not seen before are
        embedded once."""
        per_step = self.labels_of(chain)
        for step, names in per_step.items():
            self.labels[step][index] = names
        self.titles[index] = title
        unseen = sorted({name for names in per_step.values() for name in names} - self.vectors.keys())
        if unseen:
            self.vectors.update(zip(unseen, encoder.encode(unseen), strict=True))

    def save(self, directory: Path) -> None:
        """``labels.json`` (per step and item, its labels; titles) and ``label_vectors.npy`` (one row per label)."""
        directory.mkdir(parents=True, exist_ok=True)
        vocabulary = sorted(self.vectors)
        body = {"labels": self.labels, "titles": self.titles, "vocabulary": vocabulary, "dimension": self.dimension}
        (directory / LABELS_FILE).write_text(json.dumps(body))
        np.save(
            directory / VECTORS_FILE,
            np.stack([self.vectors[label] for label in vocabulary]) if vocabulary else np.zeros((0, self.dimension)),
        )

    @classmethod
    def load(cls, directory: Path) -> ItemLabels:
        body = json.loads((directory / LABELS_FILE).read_text())
        labels = {
            step: {int(item): names for item, names in per_item.items()} for step, per_item in body["labels"].items()
        }
        vectors = np.load(directory / VECTORS_FILE).astype(np.float32)
        titles = {int(item): title for item, title in body["titles"].items()}
        return cls(labels, titles, dict(zip(body["vocabulary"], vectors, strict=True)), body["dimension"])


class EmbeddedUserReasoner:
    """Chains for any structure and window from item knowledge alone; the no-LLM backend of SCoTER's Generate."""

    backend = "embedded"
    prompt_version: str | None = None
    model: str | None = None

    def __init__(self, labels: ItemLabels) -> None:
        self.labels = labels

    def chains(self, histories: Sequence[Sequence[int]], structure: Structure, window: int) -> list[UserChain | None]:
        """One chain per history (oldest item first); this backend never fails one."""
        return [self.chain(history, structure, window) for history in histories]

    def chain(self, history: Sequence[int], structure: Structure, window: int) -> UserChain:
        recent = list(history)[-window:]
        texts: list[str] = []
        vectors: list[np.ndarray] = []
        for step in structure:
            if step == "target":
                text, vector = self._target(texts, vectors)
            else:
                text, vector = self._step(step, recent)
            texts.append(text)
            vectors.append(vector)
        return UserChain(structure, window, texts, np.stack(vectors))

    def _step(self, step: str, recent: list[int]) -> tuple[str, np.ndarray]:
        counts: defaultdict[str, float] = defaultdict(float)
        for position, item in enumerate(recent):
            for label in self.labels.labels[step].get(item, []):
                counts[label] += 1.0 + position / max(1, len(recent))  # recent items weigh up to twice as much
        top = sorted(counts.items(), key=lambda pair: pair[1], reverse=True)[:TOP_LABELS]  # ties: first counted first
        vector = _mean(
            [self.labels.vectors[label] for label, _ in top], [weight for _, weight in top], self.labels.dimension
        )
        names = ", ".join(label for label, _ in top) or "nothing known"
        if step == "history":
            latest = self.labels.titles.get(recent[-1], "") if recent else ""
            return f"history: mostly {names}; latest: {latest[:80]}", vector
        if step == "needs":
            return f"needs: {names}", vector
        return f"attributes: prefers {names}", vector

    def _target(self, texts: list[str], vectors: list[np.ndarray]) -> tuple[str, np.ndarray]:
        vector = _mean(vectors, [position + 1.0 for position in range(len(vectors))], self.labels.dimension)
        focus = "; ".join(text.split(": ", 1)[1].split(";")[0] for text in texts)
        return f"target: next, look for {focus}", vector


def _field(chain: KnowledgeChain, path: str) -> list[str]:
    step, name = path.split(".")
    return list(getattr(getattr(chain, step), name))


def _mean(vectors: Sequence[np.ndarray], weights: Sequence[float], dimension: int) -> np.ndarray:
    """Normalised weighted mean; zeros when there is nothing (or only zero vectors) to average."""
    if not vectors:
        return np.zeros(dimension, dtype=np.float32)
    total = np.average(np.stack(vectors), axis=0, weights=np.asarray(weights, dtype=np.float64))
    norm = float(np.linalg.norm(total))
    return (total / norm).astype(np.float32) if norm > 1e-9 else np.zeros(dimension, dtype=np.float32)
