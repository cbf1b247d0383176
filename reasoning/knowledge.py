"""Knowledge into representations: one vector per reasoning step, in step order, a fused item vector, and the
knowledge-enriched item text.

A step is encoded from its structured fields (its rationale justifies them and is left out); the fused vector is
the normalised mean of the item text's embedding and the step vectors, the knowledge-enriched item
representation. The enriched text (the item text, then each step's fields) is what semantic IDs are built from
when a model is trained with ``item_text="knowledge"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.text_encoder import TextEncoder
from reaseq.contracts import KnowledgeChain, ReasoningStep


def step_text(name: str, step: ReasoningStep) -> str:
    fields = step.model_dump(mode="json", exclude={"rationale"})
    parts = [
        f"{key}: {', '.join(value) if isinstance(value, list) else value}" for key, value in fields.items() if value
    ]
    return f"{name}; " + "; ".join(parts)


def enriched_text(text: str, chain: KnowledgeChain, item_chars: int = 300) -> str:
    """The item's text (cut, so the encoder's window reaches the steps) followed by its steps' fields in order."""
    return "; ".join([text[:item_chars], *(step_text(name, step) for name, step in chain.steps() if name != "summary")])


def knowledge_vectors(
    encoder: TextEncoder, item_texts: Sequence[str], chains: Sequence[KnowledgeChain]
) -> tuple[np.ndarray, np.ndarray]:
    """Step vectors [n, steps, d] and fused vectors [n, d] of a batch of items, in one encoder call."""
    steps = len(KnowledgeChain.step_names())
    texts = [
        text
        for item, chain in zip(item_texts, chains, strict=True)
        for text in (item, *(step_text(n, s) for n, s in chain.steps()))
    ]
    vectors = np.asarray(encoder.encode(texts)).reshape(len(chains), steps + 1, -1)
    fused = vectors.mean(axis=1)
    fused /= np.linalg.norm(fused, axis=1, keepdims=True).clip(min=1e-12)
    return vectors[:, 1:], fused
