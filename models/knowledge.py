"""Knowledge into representations: one vector per reasoning step, in step order, and a fused item vector.

A step is encoded from its structured fields (its rationale justifies them and is left out); the fused vector is
the normalised mean of the item text's embedding and the step vectors, the knowledge-enriched item
representation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.text_encoder import TextEncoder
from reaseq.contracts import KnowledgeChain, ReasoningStep


def step_text(name: str, step: ReasoningStep) -> str:
    fields = step.model_dump(mode="json", exclude={"rationale"})
    parts = [f"{key}: {', '.join(value) if isinstance(value, list) else value}" for key, value in fields.items() if value]
    return f"{name}; " + "; ".join(parts)


def knowledge_vectors(
    encoder: TextEncoder, item_texts: Sequence[str], chains: Sequence[KnowledgeChain]
) -> tuple[np.ndarray, np.ndarray]:
    """Step vectors [n, steps, d] and fused vectors [n, d] of a batch of items, in one encoder call."""
    steps = len(KnowledgeChain.step_names())
    texts = [text for item, chain in zip(item_texts, chains, strict=True) for text in (item, *(step_text(n, s) for n, s in chain.steps()))]
    vectors = np.asarray(encoder.encode(texts)).reshape(len(chains), steps + 1, -1)
    fused = vectors.mean(axis=1)
    fused /= np.linalg.norm(fused, axis=1, keepdims=True).clip(min=1e-12)
    return vectors[:, 1:], fused
