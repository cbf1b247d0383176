"""A tiny model version on disk, as training writes one, and item features to publish beside it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import torch

from models.ranker_inputs import SideInputs
from models.rqvae import RQVAEConfig, train_rqvae
from models.semantic_ids import SemanticIdTable
from models.tiger import TigerConfig, TigerRanker
from models.tokenizer import SemanticIdTokenizer
from reaseq.contracts import ItemFeatureUpdate
from training.registry import ITEMS_FILE

T0 = datetime(2026, 5, 1, tzinfo=UTC)
ITEMS = 40


def build_model(directory: Path, side: SideInputs) -> Path:
    """A model version over items i0..i39: RQ-VAE on random 384-d vectors (MiniLM's width), a tiny ranker."""
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(ITEMS, 384)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    ids = SemanticIdTable.build(
        train_rqvae(embeddings, RQVAEConfig(codebook_size=8, epochs=5), seed=0, device="cpu"), embeddings
    )
    tokenizer = SemanticIdTokenizer({int(k): v for k, v in ids.ids.items()}, ids.codes_per_level, num_user_buckets=10)
    config = TigerConfig(
        d_model=32, d_kv=8, num_heads=2, d_ff=32, num_encoder_layers=1, num_decoder_layers=1, side=side
    )
    ranker = TigerRanker(tokenizer, config, device="cpu")
    if side.knowledge:
        ranker.set_item_vectors(torch.zeros(ITEMS, side.vector_dim))
    ids.save(directory / "ids")
    ranker.save(directory / "ranker")
    (directory / ITEMS_FILE).write_text(json.dumps([f"i{n}" for n in range(ITEMS)]))
    (directory / "config.json").write_text("{}")
    return directory


def item(item_id: str, title: str, seconds: int) -> ItemFeatureUpdate:
    when = T0 + timedelta(seconds=seconds)
    return ItemFeatureUpdate(
        item_id=item_id,
        content_hash=item_id,
        title=title,
        brand=None,
        categories=["x"],
        price=None,
        event_time=when,
        first_seen=when,
    )
