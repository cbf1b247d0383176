"""A serving runtime: one model version, its feature replica, and the thread that keeps the replica fresh.

Triton's Python model (``triton_repo/ranker/model.py``) wraps one; the serving benchmark calls one in-process.
Each model version keeps its own replica folder, because IDs of items published after training belong to a
version: a newly promoted version bootstraps its replica from the compacted topics, a restarted one resumes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from reaseq.contracts import RankRequest, RankResponse
from reaseq.settings import Settings
from serving.replica import FeatureReplica
from serving.service import RankerService
from training.artifact import ModelArtifact

log = logging.getLogger(__name__)


def replica_dir(settings: Settings, model_dir: Path) -> Path:
    """``<state_dir>/serving/<dataset>/<version>``: one replica per model version."""
    return settings.state_dir.resolve() / "serving" / model_dir.parent.name / model_dir.name


class ServingRuntime:
    """Ranks on the caller's thread with ``serving_threads`` torch threads (set here, for the creating thread).

    Triton's Python backend creates and calls the model on one thread. Other callers should know that OpenMP
    settings are per thread: on the 2-core CPU measured, a caller thread other than the one that first used
    torch ran 2.3x slower with two OpenMP threads than with one (``torch.set_num_threads(1)`` in that thread).
    """

    def __init__(self, model_dir: Path, settings: Settings, bootstrap: str) -> None:
        torch.set_num_threads(settings.serving_threads)
        self.settings = settings
        self.bootstrap = bootstrap
        artifact = ModelArtifact.load(model_dir)
        self.replica = FeatureReplica(replica_dir(settings, model_dir), settings, bootstrap)
        self.service = RankerService(artifact, self.replica, settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="feature-replica", daemon=True)
        self.error: BaseException | None = None

    @property
    def version(self) -> str:
        return self.service.version

    def start(self, catch_up_timeout_s: float = 120.0) -> ServingRuntime:
        """Apply everything on the feature topics up to now, then follow them in the background."""
        ends = self.replica.end_offsets()
        deadline = time.monotonic() + catch_up_timeout_s
        applied = 0
        while self.replica.behind(ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"feature replica did not catch up within {catch_up_timeout_s:.0f} s")
            applied += self.service.apply(self.replica.fetch(timeout_s=0.2))
        self._thread.start()
        log.warning(  # one line per start: an operator sees whether the replica resumed or bootstrapped
            "serving runtime ready",
            extra={"version": self.version, "items": len(self.service.item_ids), "caught_up_records": applied},
        )
        return self

    def rank(self, requests: Sequence[RankRequest]) -> list[RankResponse]:
        return self.service.rank(requests)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.replica.close()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self.service.apply(self.replica.fetch(timeout_s=0.1))
            except Exception as error:  # keep serving the last good state; the log says why it is stale
                self.error = error
                log.exception("feature replica update failed; retrying")
                self._stop.wait(1.0)
