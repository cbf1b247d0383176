"""A trained model version as the serving side loads it: ``<store>/<dataset>/<version>/``.

``training.train`` writes it: ``ids/`` (semantic-ID table and frozen RQ-VAE), ``ranker/`` (weights and tokenizer),
``interests/`` (the interest model), ``reasoning/`` (for a distilled ranker: the mined pattern library and item
labels), ``items.json`` (item index -> external item id), ``config.json`` and ``metrics.json``. ``training.registry``
writes, lists and names versions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from models.semantic_ids import SemanticIdTable
from models.text_encoder import DEFAULT_MODEL
from models.tiger import TigerRanker
from reasoning.patterns import PATTERNS_FILE, REASONING_DIR, PatternLibrary
from training.registry import ITEMS_FILE, version_of


@dataclass
class ModelArtifact:
    directory: Path
    item_ids: list[str]  # item index -> external id, as trained
    ids: SemanticIdTable
    ranker: TigerRanker
    encoder: str  # the sentence encoder the semantic IDs were built with
    patterns_version: str | None = None  # the mined reasoning pattern library a distilled ranker was trained with

    @property
    def version(self) -> str:
        return version_of(self.directory)

    @classmethod
    def load(cls, directory: Path, device: torch.device | str = "cpu") -> ModelArtifact:
        """Read a version directory; raises FileNotFoundError naming what is missing."""
        missing = [name for name in ("ids", "ranker", ITEMS_FILE, "config.json") if not (directory / name).exists()]
        if missing:
            raise FileNotFoundError(f"{directory} is not a model version: missing {', '.join(missing)}")
        config = json.loads((directory / "config.json").read_text())
        patterns = directory / REASONING_DIR
        return cls(
            directory=directory.resolve(),
            item_ids=json.loads((directory / ITEMS_FILE).read_text()),
            ids=SemanticIdTable.load(directory / "ids", device),
            ranker=TigerRanker.load(directory / "ranker", device).eval(),
            encoder=config.get("encoder", DEFAULT_MODEL),
            patterns_version=PatternLibrary.load(patterns).version if (patterns / PATTERNS_FILE).is_file() else None,
        )
