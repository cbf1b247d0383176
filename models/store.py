"""The model store: ``<store>/<dataset>/<version>/`` folders, each written whole or not at all.

Training writes a version into a hidden folder beside the versions (``.<version>.partial``) and renames it into
place once everything is in it: one rename within one filesystem, so a reader sees either no version or all of it.
Every reader finds versions here, and a hidden folder is never a version. Version names start with their UTC
training time, so the newest version sorts last.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ITEMS_FILE = "items.json"  # item index -> external item id, as trained
INTERESTS_DIR = "interests"  # the interest model


@contextmanager
def stage_version(version_dir: Path) -> Iterator[Path]:
    """A hidden folder beside ``version_dir`` to write the version into; renamed to ``version_dir`` when the block
    ends normally, removed when it raises."""
    if version_dir.exists():
        raise FileExistsError(f"model version {version_dir} exists already")
    staging = version_dir.with_name(f".{version_dir.name}.partial")
    staging.mkdir(parents=True)  # an existing one is another run's, still writing
    try:
        yield staging
        os.rename(staging, version_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def version_of(directory: Path) -> str:
    """A version's name as the system reports it: ``<dataset>/<version>``."""
    return f"{directory.parent.name}/{directory.name}"


def is_version(directory: Path) -> bool:
    """Whether ``directory`` is a committed model version (a staging folder never is)."""
    hidden = directory.name.startswith(".") or directory.parent.name.startswith(".")
    return not hidden and (directory / "ranker").is_dir() and (directory / ITEMS_FILE).is_file()


def list_versions(store: Path) -> list[Path]:
    """Every committed model version under ``store``, oldest first (by name: UTC time, then hash)."""
    if not store.is_dir():
        return []
    found = [version for dataset in store.iterdir() if dataset.is_dir() for version in dataset.iterdir()]
    return sorted((path for path in found if is_version(path)), key=lambda path: path.name)


def newest_version(store: Path, having: Callable[[Path], bool] | None = None) -> Path | None:
    """The newest committed version under ``store`` (of those ``having`` accepts, when given); None if there is none."""
    found = [version for version in list_versions(store) if having is None or having(version)]
    return found[-1] if found else None


def has_interest_model(version: Path) -> bool:
    """Whether the version was trained with an interest model (the near-line interest worker's)."""
    return (version / INTERESTS_DIR / "model.safetensors").is_file()
