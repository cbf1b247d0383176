"""The text encoder with the real all-MiniLM-L6-v2 (shipped by a package, so offline) on a few strings."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from models.text_encoder import DEFAULT_MODEL, TextEncoder, cache_dir_for

TEXTS = [
    "red running shoes for men",
    "men's red sneakers for jogging",
    "stainless steel chef's knife",
    "red running shoes for men",
]


def test_minilm_embeddings_are_normalised_and_semantic(tmp_path: Path) -> None:
    encoder = TextEncoder(cache_dir=tmp_path / "cache", device="cpu")
    vectors = encoder.encode(TEXTS, batch_size=2, progress=True)

    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    assert encoder.dimension == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2
    np.testing.assert_array_equal(vectors[0], vectors[3])
    assert encoder.encoded == 3, "a repeated text is encoded once"


def test_second_encoding_is_served_from_the_cache(tmp_path: Path) -> None:
    cache = cache_dir_for(tmp_path, DEFAULT_MODEL)
    first = TextEncoder(cache_dir=cache, device="cpu").encode(TEXTS)

    again = TextEncoder(cache_dir=cache, device="cpu")
    served = again.encode(TEXTS)
    np.testing.assert_array_equal(served, first)
    assert (again.cache_hits, again.encoded) == (4, 0)
    assert again._model is None, "a fully cached call never loads the model"

    mixed = again.encode(["a cordless drill", TEXTS[2]])
    np.testing.assert_array_equal(mixed[1], first[2])
    assert (again.cache_hits, again.encoded) == (5, 1)


def test_cache_keys_depend_on_the_model(tmp_path: Path) -> None:
    assert TextEncoder().key("text") != TextEncoder("some/other-model").key("text")
    assert cache_dir_for(tmp_path, "Org/Model v2") == tmp_path / "embeddings" / "org-model-v2"


def test_encoding_waits_while_another_process_holds_the_cache(tmp_path: Path) -> None:
    cache = cache_dir_for(tmp_path, DEFAULT_MODEL)
    TextEncoder(cache_dir=cache, device="cpu").encode(TEXTS[:1])
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CACHE, str(cache)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"

    started = time.monotonic()
    vectors = TextEncoder(cache_dir=cache, device="cpu").encode(TEXTS)
    assert holder.wait(timeout=30) == 0
    assert time.monotonic() - started >= 1.0, "it opened the store while the other process held it"
    assert vectors.shape == (4, 384)


HOLD_CACHE = """
import sys, time
from rocksdict import Options, Rdict
store = Rdict(sys.argv[1], Options(raw_mode=True))
print("holding", flush=True)
time.sleep(1.5)
store.close()
"""
