"""The no-LLM default reasoner: fills the knowledge chain by zero-shot scoring with the offline MiniLM encoder.

It is not a language model and does not reason: each step's fields are the labels most similar to the item's
text among label vocabularies, mined from the catalog where the catalog has them (descriptive words, materials,
product kinds) and fixed where it cannot (seasons, audiences, usage scenarios); rationales are templates that
cite the similarities. It exists so that machines without an LLM get the same schema, the same step vectors and
the same pipeline; a served LLM (``REASEQ_LLM_BACKEND=vllm``) replaces it.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from models.text_encoder import TextEncoder
from reaseq.contracts import (
    LABEL_MAX,
    AttributesStep,
    AudienceStep,
    CatalogItem,
    ItemFeatureUpdate,
    KnowledgeChain,
    NeedsStep,
    Season,
    SummaryStep,
    UsageStep,
)
from reasoning.agents import item_text

NAME = "embedded-minilm-zero-shot"
MATERIALS = (
    "cotton",
    "wool",
    "leather",
    "silk",
    "linen",
    "polyester",
    "nylon",
    "rubber",
    "plastic",
    "glass",
    "ceramic",
    "steel",
    "aluminium",
    "wood",
    "bamboo",
    "paper",
    "silicone",
    "foam",
    "down",
    "fleece",
    "canvas",
    "metal",
)
SCENARIOS = (
    "everyday use",
    "travel",
    "outdoor activities",
    "sports and fitness",
    "work and office",
    "home and living",
    "cooking and kitchen",
    "personal care routine",
    "cleaning",
    "gifting",
    "parties and events",
    "study",
    "gardening",
    "commuting",
    "relaxation",
)
AUDIENCES = (
    "women",
    "men",
    "children",
    "teenagers",
    "parents",
    "students",
    "professionals",
    "athletes",
    "beginners",
    "enthusiasts",
    "older adults",
    "pet owners",
    "travellers",
    "home cooks",
)
SEASON_PHRASES = {
    Season.SPRING: "spring, mild weather",
    Season.SUMMER: "summer, hot sunny weather",
    Season.AUTUMN: "autumn, cool rainy weather",
    Season.WINTER: "winter, cold snowy weather",
}
STOPWORDS = frozenset(
    [
        "with",
        "from",
        "that",
        "this",
        "your",
        "have",
        "will",
        "been",
        "they",
        "their",
        "them",
        "these",
        "those",
        "into",
        "over",
        "under",
        "more",
        "most",
        "very",
        "also",
        "than",
        "then",
        "when",
        "what",
        "which",
        "while",
        "where",
        "each",
        "other",
        "only",
        "just",
        "about",
        "after",
        "before",
        "such",
        "both",
        "made",
        "make",
        "great",
        "best",
        "good",
        "item",
        "items",
        "product",
        "products",
        "pack",
        "includes",
        "include",
        "including",
        "using",
        "used",
    ]
)
WORD = re.compile(r"[a-z][a-z-]{3,}")


@dataclass(frozen=True)
class LabelVocabulary:
    attributes: tuple[str, ...]
    materials: tuple[str, ...]
    kinds: tuple[str, ...]  # product kinds (the catalog's categories), for complements and substitutes

    @classmethod
    def mine(cls, items: Iterable[CatalogItem | ItemFeatureUpdate], max_attributes: int = 300) -> LabelVocabulary:
        """Descriptive words common to several items (not brands), the lexicon's materials the catalog mentions,
        and every category."""
        documents, kinds, brands = Counter[str](), Counter[str](), set()
        count = 0
        for item in items:
            count += 1
            documents.update(set(WORD.findall(f"{item.title} {item.description}".lower())))
            # a "category" longer than a label is catalog noise (a pasted description), not a product kind
            kinds.update(category.strip() for category in item.categories if 0 < len(category.strip()) <= LABEL_MAX)
            if item.brand:
                brands.add(item.brand.lower())
        ceiling = max(2, count // 2)  # words in most items say nothing about any one of them
        attributes = [
            word
            for word, df in documents.most_common()
            if 2 <= df <= ceiling and word not in STOPWORDS and word not in brands and word not in MATERIALS
        ][:max_attributes]
        materials = [m for m in MATERIALS if documents[m]] or list(MATERIALS)
        return cls(
            tuple(attributes) or ("general purpose",), tuple(materials), tuple(kinds) or ("general merchandise",)
        )


class EmbeddedReasoner:
    """Batch zero-shot labelling; the vocabulary is mined again whenever the catalog it has seen grows by a fifth."""

    backend = "embedded"
    model = NAME
    prompt_version = "none"

    def __init__(self, encoder: TextEncoder, vocabulary: LabelVocabulary | None = None, floor: float = 0.15) -> None:
        self.encoder = encoder
        self.floor = floor
        self._catalog: dict[str, CatalogItem | ItemFeatureUpdate] = {}
        self._mined_at = 0
        self.vocabulary = vocabulary or LabelVocabulary.mine([])

    def observe(self, items: Sequence[CatalogItem | ItemFeatureUpdate]) -> None:
        self._catalog.update((item.item_id, item) for item in items)
        if len(self._catalog) >= max(1, int(self._mined_at * 1.2)) and len(self._catalog) != self._mined_at:
            self.vocabulary = LabelVocabulary.mine(self._catalog.values())
            self._mined_at = len(self._catalog)

    async def reason(self, items: Sequence[CatalogItem]) -> list[object]:
        """The protocol of ``workers.enrichment``: one outcome per item (a batch fails item by item)."""
        try:
            return list(await asyncio.to_thread(self.reason_batch, items))
        except Exception as error:  # dead-letters the batch's items with the reason instead of stopping
            return [error for _ in items]

    @property
    def vocabulary(self) -> LabelVocabulary:
        return self._vocabulary

    @vocabulary.setter
    def vocabulary(self, vocabulary: LabelVocabulary) -> None:
        self._vocabulary = vocabulary
        self._labels = {
            "attributes": (vocabulary.attributes, self.encoder.encode(list(vocabulary.attributes))),
            "materials": (vocabulary.materials, self.encoder.encode(list(vocabulary.materials))),
            "kinds": (vocabulary.kinds, self.encoder.encode(list(vocabulary.kinds))),
            "scenarios": (SCENARIOS, self.encoder.encode(list(SCENARIOS))),
            "audiences": (AUDIENCES, self.encoder.encode([f"a product for {a}" for a in AUDIENCES])),
            "seasons": (tuple(s.value for s in SEASON_PHRASES), self.encoder.encode(list(SEASON_PHRASES.values()))),
        }

    def reason_batch(self, items: Sequence[CatalogItem]) -> list[tuple[KnowledgeChain, list[str]]]:
        texts = [item_text(item) for item in items]
        vectors = self.encoder.encode(texts)
        chains = [self._chain(item, vector) for item, vector in zip(items, vectors, strict=True)]
        summaries = self.encoder.encode([chain.summary.summary for chain in chains])
        return [
            (chain, self._verify(chain, vector, summary))
            for chain, vector, summary in zip(chains, vectors, summaries, strict=True)
        ]

    def _top(self, vocabulary: str, vector: np.ndarray, k: int, minimum: int = 0) -> list[tuple[str, float]]:
        labels, embeddings = self._labels[vocabulary]
        scores = embeddings @ vector
        order = np.argsort(-scores)[:k]
        picked = [(str(labels[i]), float(scores[i])) for i in order if scores[i] >= self.floor]
        return picked if len(picked) >= minimum else [(str(labels[i]), float(scores[i])) for i in order[:minimum]]

    def _chain(self, item: CatalogItem, vector: np.ndarray) -> KnowledgeChain:
        words = set(WORD.findall(f"{item.title} {item.description}".lower()))
        # attributes and materials the text names, most characteristic first; the closest label if it names none
        attributes = [a for a in self._top("attributes", vector, 40) if a[0] in words][:6] or self._top(
            "attributes", vector, 1, 1
        )
        materials = [m for m in self._top("materials", vector, 3) if m[0] in words]
        scenarios = self._top("scenarios", vector, 3, minimum=1)
        seasons = self._top("seasons", vector, 4, minimum=1)
        best = seasons[0][1]
        # a flat season profile means the text is not seasonal
        season_values = (
            [Season.ALL_YEAR] if best - seasons[-1][1] < 0.05 else [Season(s) for s, v in seasons if v >= best - 0.03]
        )
        audiences = self._top("audiences", vector, 3, minimum=1)
        own = {category.strip() for category in item.categories}
        kinds = self._top("kinds", vector, 8)
        substitutes = [k for k in kinds if k[0] in own][:3] or kinds[:1]
        complements = [k for k in kinds if k[0] not in own][:3]
        summary = (
            f"{item.title}: {', '.join(a for a, _ in attributes[:3])}; for {audiences[0][0]}, {scenarios[0][0]}."
        )[:300]
        return KnowledgeChain(
            attributes=AttributesStep(
                rationale=_cite("attribute", attributes + materials),
                attributes=[a for a, _ in attributes],
                materials=[m for m, _ in materials],
            ),
            usage=UsageStep(
                rationale=_cite("usage", scenarios + seasons),
                scenarios=[s for s, _ in scenarios],
                seasons=season_values,
            ),
            audience=AudienceStep(rationale=_cite("audience", audiences), audiences=[a for a, _ in audiences]),
            needs=NeedsStep(
                rationale=_cite("product kind", substitutes + complements),
                complements=[c for c, _ in complements],
                substitutes=[s for s, _ in substitutes],
            ),
            summary=SummaryStep(
                rationale="Template over the highest-scoring labels of the steps above.", summary=summary
            ),
        )

    def _verify(self, chain: KnowledgeChain, item_vector: np.ndarray, summary_vector: np.ndarray) -> list[str]:
        """The embedded critic: a summary that drifted from the item text is reported."""
        similarity = float(summary_vector @ item_vector)
        return [] if similarity >= 0.5 else [f"summary: similarity to the item text only {similarity:.2f}"]


def _cite(kind: str, labels: list[tuple[str, float]]) -> str:
    cited = ", ".join(f"'{label}' ({score:.2f})" for label, score in labels[:5])
    return f"Zero-shot {kind} labels closest to the item text (cosine similarity): {cited or 'none above the floor'}."
