"""The model registry: the trained versions of the model store, and the versions published for serving.

The model store holds ``<store>/<dataset>/<version>/`` folders, each written whole or not at all.

Training writes a version into a hidden folder beside the versions (``.<version>.partial``) and renames it into
place once everything is in it: one rename within one filesystem, so a reader sees either no version or all of it.
Every reader finds versions here, and a hidden folder is never a version. Version names start with their UTC
training time, so the newest version sorts last.

The versions published for serving are numbered folders of Triton's runtime repository
(``<state_dir>/triton/repository/ranker/<n>/``), each naming one model directory; Triton serves the newest, so
the newest published version is the served one, and everything that must follow serving (the interest worker, the
operator page) asks ``served_model`` here.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from reaseq.settings import Settings

ITEMS_FILE = "items.json"  # item index -> external item id, as trained
INTERESTS_DIR = "interests"  # the interest model


class RegistryError(ValueError):
    """A folder is not a model version."""


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


def has_id_model(version: Path) -> bool:
    """Whether the version's semantic IDs come with their RQ-VAE, which can give items published later an ID."""
    return (version / "ids" / "model.pt").is_file()


MODEL_NAME = "ranker"  # the ranker's name in Triton's repository
SOURCE = Path(__file__).resolve().parents[1] / "triton_repo" / MODEL_NAME  # its config.pbtxt and model.py
ARTIFACT_FILE = "artifact.json"  # in a published version: the model directory it serves


class ModelRepository:
    """The runtime repository's versions of the ranker, each pointing at a model directory."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.state_dir.resolve() / "triton" / "repository"
        self.model = self.root / MODEL_NAME
        self.retired = settings.state_dir.resolve() / "triton" / "retired"

    def versions(self) -> dict[int, Path]:
        """Version number -> model directory, oldest first."""
        found = {}
        if self.model.is_dir():
            for folder in self.model.iterdir():
                if folder.name.isdigit() and (folder / ARTIFACT_FILE).is_file():
                    found[int(folder.name)] = Path(json.loads((folder / ARTIFACT_FILE).read_text())["model_dir"])
        return dict(sorted(found.items()))

    def newest(self) -> tuple[int, Path] | None:
        versions = self.versions()
        return max(versions.items()) if versions else None

    def ensure_version(self, model_store: Path) -> bool:
        """Publish the model store's newest version if the repository has none; False when neither has one."""
        if self.newest() is not None:
            return True
        trained = newest_version(model_store)
        if trained is not None:
            self.publish(trained)
        return trained is not None

    def publish(self, model_dir: Path, catch_up_timeout_s: float = 120.0) -> int:
        """Add ``model_dir`` as the next version (not loaded yet); returns its number."""
        if not is_version(model_dir):
            raise RegistryError(f"{model_dir} is not a model version (reaseq train writes them)")
        self.model.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SOURCE / "config.pbtxt", self.model / "config.pbtxt")
        taken = [int(f.name) for f in self.model.iterdir() if f.name.isdigit()]
        taken += [int(f.name) for f in self.retired.iterdir() if f.name.isdigit()] if self.retired.is_dir() else []
        number = max(taken, default=0) + 1  # never reuse a retired number: Triton caches by version
        folder = self.model / str(number)
        staging = self.model / f".{number}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        shutil.copyfile(SOURCE / "model.py", staging / "model.py")
        artifact = {"model_dir": str(model_dir.resolve()), "catch_up_timeout_s": catch_up_timeout_s}
        (staging / ARTIFACT_FILE).write_text(json.dumps(artifact, indent=2))
        staging.rename(folder)  # a half-written version is never visible to Triton
        return number

    def retire(self, number: int) -> None:
        self.retired.mkdir(parents=True, exist_ok=True)
        (self.model / str(number)).rename(self.retired / str(number))


def served_model(settings: Settings) -> Path | None:
    """The model directory of the version published for serving (Triton serves the newest); None if none is."""
    newest = ModelRepository(settings).newest()
    return None if newest is None else newest[1]
