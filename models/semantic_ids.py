"""Semantic IDs: each item's RQ-VAE codes plus one collision code, unique and stable within a version.

An item's ID is its ``levels`` codes from a trained, frozen RQ-VAE followed by a collision code that tells
apart items with the same codes (0, 1, 2, ... in the order items were assigned), as in TIGER. The table also
reads the published ``*.rqvae-index.json`` indices so a ranker can be trained on the paper's IDs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch

from models.rqvae import RQVAE, RQVAEConfig, codebook_report

SemanticId = tuple[int, ...]

# Codebook size of the published indices: their tokens run <a_0> .. <a_255> at every level.
PUBLISHED_CODEBOOK_SIZE = 256
_TOKEN = re.compile(r"<([a-z])_(\d+)>")


def load_published_ids(path: Path) -> dict[int, SemanticId]:
    """Read a published index ``{"<item_idx>": ["<a_114>", "<b_32>", ...]}`` (0-based item index, letter = level)."""
    published: dict[int, SemanticId] = {}
    for index, tokens in json.loads(path.read_text()).items():
        codes = []
        for level, token in enumerate(tokens):
            match = _TOKEN.fullmatch(token)
            if match is None or match.group(1) != chr(ord("a") + level):
                raise ValueError(f"{path}: item {index}: token {token!r} is not a level-{level} code")
            codes.append(int(match.group(2)))
        published[int(index)] = tuple(codes)
    if len({len(codes) for codes in published.values()}) > 1:
        raise ValueError(f"{path}: items have different numbers of codes")
    return published


class SemanticIdTable:
    """Item key -> semantic ID, with the frozen RQ-VAE that assigns IDs to items arriving later.

    Build one with :meth:`build` (own RQ-VAE) or :meth:`from_published`; persist with :meth:`save` and
    :meth:`load`. IDs built here are unique; published ones need not be (see :meth:`item_of`).
    """

    def __init__(
        self,
        ids: Mapping[str, SemanticId],
        codes_per_level: list[int],
        version: str,
        model: RQVAE | None = None,
    ) -> None:
        self._ids = dict(ids)
        self.codes_per_level = list(codes_per_level)
        self.version = version
        self.model = model
        self.reassigned = 0  # published IDs that were taken already and got a free collision code
        self._items: dict[SemanticId, str] = {}
        self._next_free: Counter[SemanticId] = Counter()
        for key, semantic_id in self._ids.items():
            self._items.setdefault(semantic_id, key)
            prefix = semantic_id[:-1]
            self._next_free[prefix] = max(self._next_free[prefix], semantic_id[-1] + 1)

    @classmethod
    def build(cls, model: RQVAE, embeddings: np.ndarray, keys: Iterable[str] | None = None) -> SemanticIdTable:
        """Assign every item (row of ``embeddings``; keys default to the row index) its codes and collision code."""
        return cls.from_codes(model, model.codes(embeddings), keys)

    @classmethod
    def from_codes(cls, model: RQVAE, codes: np.ndarray, keys: Iterable[str] | None = None) -> SemanticIdTable:
        """As :meth:`build`, from the codes ``model`` gave the items (computed in parts, for a large catalog)."""
        keys = [str(index) for index in range(len(codes))] if keys is None else list(keys)
        if len(keys) != len(codes) or len(set(keys)) != len(keys):
            raise ValueError("keys must be distinct, one per embedding")
        next_free: Counter[SemanticId] = Counter()
        ids: dict[str, SemanticId] = {}
        for key, prefix in zip(keys, map(tuple, codes.tolist())):
            ids[key] = (*prefix, next_free[prefix])
            next_free[prefix] += 1
        # The collision level gets at least a full codebook, and twice the fullest prefix, so items arriving later
        # still fit the ranker's vocabulary (it is fixed at training).
        collision_codes = max(model.config.codebook_size, 2 * max(next_free.values(), default=0))
        codes_per_level = [model.config.codebook_size] * model.config.levels + [collision_codes]
        return cls(ids, codes_per_level, _version(model, ids), model)

    @classmethod
    def from_published(cls, ids: Mapping[int, SemanticId]) -> SemanticIdTable:
        """A table over published IDs (keys are the item indices as strings); it cannot assign new items.

        Published indices are not always unique (Beauty's gives 602 items an ID another item holds); a
        ranker needs one item per ID, so each later holder of a taken ID gets the next free collision code
        of its prefix, as the RQ-VAE assignment does. ``stats()["reassigned"]`` counts them.
        """
        ordered = {str(index): tuple(ids[index]) for index in sorted(ids)}
        widths = {len(semantic_id) for semantic_id in ordered.values()}
        if len(widths) != 1:
            raise ValueError("published IDs must all have the same number of codes")
        next_free: Counter[SemanticId] = Counter()
        for semantic_id in ordered.values():
            next_free[semantic_id[:-1]] = max(next_free[semantic_id[:-1]], semantic_id[-1] + 1)
        taken: set[SemanticId] = set()
        reassigned = 0
        for key, semantic_id in ordered.items():
            if semantic_id in taken:
                prefix = semantic_id[:-1]
                semantic_id = ordered[key] = (*prefix, next_free[prefix])
                next_free[prefix] += 1
                reassigned += 1
            taken.add(semantic_id)
        codes = np.array(list(ordered.values()))
        codes_per_level = [max(PUBLISHED_CODEBOOK_SIZE, int(top) + 1) for top in codes.max(axis=0)]
        digest = hashlib.sha256(json.dumps(ordered).encode()).hexdigest()[:12]
        table = cls(ordered, codes_per_level, f"published-{digest}")
        table.reassigned = reassigned
        return table

    @property
    def ids(self) -> Mapping[str, SemanticId]:
        """Read-only view of every assigned ID, in assignment order."""
        return MappingProxyType(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __getitem__(self, key: str) -> SemanticId:
        return self._ids[key]

    def item_of(self, semantic_id: Iterable[int]) -> str:
        """The item holding ``semantic_id`` (the earliest assigned one where published IDs are shared)."""
        return self._items[tuple(semantic_id)]

    def assign_new(self, item_key: str, embedding: np.ndarray) -> SemanticId:
        """ID of an item arriving later: codes from the frozen model, the next free collision code of its prefix.

        An item that already has an ID keeps it, whatever ``embedding`` is now.
        """
        if item_key in self._ids:
            return self._ids[item_key]
        if self.model is None:
            raise RuntimeError("this table has no RQ-VAE (published IDs): it cannot assign new items")
        prefix = tuple(self.model.codes(np.asarray(embedding)[None])[0].tolist())
        collision = self._next_free[prefix]
        if collision >= self.codes_per_level[-1]:
            raise ValueError(f"code prefix {prefix} is full ({collision} items): retrain for a new version")
        semantic_id = (*prefix, collision)
        self._ids[item_key] = semantic_id
        self._items[semantic_id] = item_key
        self._next_free[prefix] = collision + 1
        return semantic_id

    def restore(self, item_key: str, semantic_id: SemanticId) -> None:
        """Re-apply an assignment ``assign_new`` made earlier (read back from where it was published or stored)."""
        semantic_id = tuple(int(code) for code in semantic_id)
        if len(semantic_id) != len(self.codes_per_level) or not all(
            0 <= code < size for code, size in zip(semantic_id, self.codes_per_level, strict=True)
        ):
            raise ValueError(f"{semantic_id} is not a semantic ID of codebooks {self.codes_per_level}")
        holder = self._items.get(semantic_id)
        if self._ids.get(item_key, semantic_id) != semantic_id or holder not in (None, item_key):
            raise ValueError(f"cannot restore {item_key} -> {semantic_id}: it clashes with the table")
        self._ids[item_key] = semantic_id
        self._items[semantic_id] = item_key
        prefix = semantic_id[:-1]
        self._next_free[prefix] = max(self._next_free[prefix], semantic_id[-1] + 1)

    def stats(self) -> dict[str, object]:
        """Collisions among the code prefixes, items sharing a full ID (none), and reassigned published IDs."""
        ids = np.array(list(self._ids.values()), dtype=np.int64)
        report = codebook_report(ids[:, :-1])
        return {
            "items": report.items,
            "used_codes": report.used_codes,
            "distinct_prefixes": report.unique_prefixes,
            "prefix_collision_rate": report.collision_rate,
            "max_items_per_prefix": report.max_items_per_prefix,
            "shared_ids": len(self._ids) - len(self._items),
            "reassigned": self.reassigned,
        }

    def save(self, directory: Path) -> None:
        """Write ``model.pt`` (RQ-VAE state dict, if any), ``config.json`` and ``id_table.json``, each atomically."""
        directory.mkdir(parents=True, exist_ok=True)
        config: dict[str, object] = {"version": self.version, "codes_per_level": self.codes_per_level}
        if self.model is not None:
            buffer = io.BytesIO()
            torch.save(self.model.state_dict(), buffer)
            _write_atomic(directory / "model.pt", buffer.getvalue())
            config.update(input_dim=self.model.input_dim, seed=self.model.seed, rqvae=self.model.config.to_json())
        config["stats"] = self.stats()
        _write_atomic(directory / "config.json", json.dumps(config, indent=2).encode())
        _write_atomic(directory / "id_table.json", json.dumps(self._ids).encode())

    @classmethod
    def load(cls, directory: Path, device: torch.device | str = "cpu") -> SemanticIdTable:
        """Read a table written by :meth:`save`; its model (if any) is put on ``device`` in eval mode."""
        config = json.loads((directory / "config.json").read_text())
        ids = {key: tuple(codes) for key, codes in json.loads((directory / "id_table.json").read_text()).items()}
        model = None
        if "rqvae" in config:
            model = RQVAE(config["input_dim"], RQVAEConfig.from_json(config["rqvae"]), config["seed"])
            state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            model.to(device).eval()
        return cls(ids, config["codes_per_level"], config["version"], model)


def _version(model: RQVAE, ids: Mapping[str, SemanticId]) -> str:
    """Short hash of the model (codebooks and weights), its config and the IDs it was built with."""
    digest = hashlib.sha256()
    digest.update(json.dumps([model.input_dim, model.seed, model.config.to_json()]).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(ids).encode())
    return digest.hexdigest()[:12]


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a synced temporary file and a rename, so a crash leaves the old file or the new, never half."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
