"""The ranker over live features: one model version's weights and semantic IDs, the replica's items and users.

A distilled ranker also reads, per user, the reasoning steps and beyond-log items the near-line worker published
(from the replica; steps only when they were filled with this version's pattern), and per item the knowledge
vector of the latest knowledge the replica holds.

Items published after training are rankable once their semantic ID arrives on the ``item-ids`` topic, where one
writer (``workers.item_ids``) assigns each item one ID per version, so that every replica of a version ranks it alike;
a replica takes the first ID published for an item and stores it, in the same write as the batch, with the index it
gave the item, so a restarted server gives every item the ID it had. Requests of one batch share one
encoder pass and one decoder pass: all candidate lists are scored together, all top-k searches run as one
batched beam search.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models.ranker_inputs import UserContext
from models.tokenizer import SemanticIdTokenizer
from reaseq.contracts import ItemSemanticId, KnowledgeResult, RankRequest, RankResponse, RankSource, ScoredItem
from reaseq.settings import Settings
from serving.replica import FeatureReplica, FetchedBatch
from training.artifact import ModelArtifact

log = logging.getLogger(__name__)

ASSIGNED = b"s/"  # replica entries: item id -> "index,code,code,..."
FRESH_POOL = 1000  # newest items kept for cold-start answers


@dataclass(frozen=True)
class ColdStartView:
    total: int  # interactions counted, plus one
    key: Callable[[str], tuple[int, int]]  # (interactions, recency rank): higher is first
    popular: list[str]  # every counted item, best first


class RankerService:
    """Answers ``RankRequest`` batches; ``apply`` takes the next fetched feature updates. Thread-safe."""

    def __init__(self, artifact: ModelArtifact, replica: FeatureReplica, settings: Settings) -> None:
        self.artifact = artifact
        self.replica = replica
        self.settings = settings
        self.ranker = artifact.ranker
        self.item_ids: list[str] = list(artifact.item_ids)  # index -> id, trained items first
        self.index_of = {item_id: index for index, item_id in enumerate(self.item_ids)}
        self._lock = threading.Lock()
        self._fresh: list[tuple[str, str]] = []  # (first_seen ISO, item id), newest last
        self._catalog: set[str] = set()  # items published on the topics (rankable or not)
        self._popularity: dict[str, int] = {}
        self._cold: ColdStartView | None = None  # derived from the three above; rebuilt after they change
        self._restore()

    @property
    def version(self) -> str:
        return self.artifact.version

    # -- live features ------------------------------------------------------------------------

    def apply(self, batch: FetchedBatch) -> int:
        """Take this version's new IDs, write the batch, and make its items and users rankable."""
        if not batch:
            return 0
        assigned = self._adopt(batch.ids)
        extra = {ASSIGNED + item_id.encode(): ",".join(map(str, row)).encode() for item_id, row in assigned.items()}
        counts = self.replica.write(batch, extra)
        self._publish(batch, assigned, counts)
        return len(batch.items) + len(batch.ids) + len(batch.users) + len(batch.knowledge)

    def _adopt(self, ids: Sequence[ItemSemanticId]) -> dict[str, tuple[int, ...]]:
        """This version's IDs of items it does not know yet, in the order published: index first, then the codes."""
        assigned: dict[str, tuple[int, ...]] = {}
        for record in ids:
            if record.model_version != self.version or record.item_id in self.index_of or record.item_id in assigned:
                continue  # another version's, or a second ID for an item: the first one published stands
            index = len(self.item_ids) + len(assigned)
            try:
                self.artifact.ids.restore(str(index), tuple(record.codes))
            except ValueError as error:  # a code another item holds: every replica refuses it alike
                log.warning("semantic ID refused", extra={"item_id": record.item_id, "error": str(error)})
                continue
            assigned[record.item_id] = (index, *record.codes)
        return assigned

    def _publish(self, batch: FetchedBatch, assigned: dict[str, tuple[int, ...]], counts: dict[str, int]) -> None:
        # The trie is rebuilt before taking the lock, so requests wait only for the swap. Only this (the
        # follower) thread changes the tokenizer, so building from the current one is safe.
        tokenizer = self._tokenizer_for(assigned) if assigned else None
        # an item's knowledge may have come before its ID: the replica holds it since
        knowledge = {**batch.knowledge, **{item_id: self.replica.knowledge(item_id) for item_id in assigned}}
        with self._lock:
            if tokenizer is not None:
                self._add_items(assigned, tokenizer)
            if self.ranker.config.side.knowledge:
                self._set_item_vectors(knowledge)
            self._catalog.update(item_id for item_id, item in batch.items.items() if item is not None)
            self._fresh.extend((item.first_seen.isoformat(), item.item_id) for item in batch.items.values() if item)
            self._fresh = sorted(set(self._fresh))[-FRESH_POOL:]
            self._popularity.update(counts)
            self._cold = None

    def _tokenizer_for(self, assigned: dict[str, tuple[int, ...]]) -> SemanticIdTokenizer:
        return self.ranker.tokenizer.with_items({index: codes for index, *codes in assigned.values()})

    def _add_items(self, assigned: dict[str, tuple[int, ...]], tokenizer: SemanticIdTokenizer) -> None:
        for item_id, (index, *_codes) in sorted(assigned.items(), key=lambda pair: pair[1][0]):
            if index != len(self.item_ids):
                raise RuntimeError(f"semantic-ID assignments out of order at {item_id} (index {index})")
            self.item_ids.append(item_id)
            self.index_of[item_id] = index
        self.ranker.use_tokenizer(tokenizer)

    def _set_item_vectors(self, knowledge: Mapping[str, KnowledgeResult | None]) -> None:
        """Latest knowledge vectors of rankable items, so new items' knowledge reaches the ranker too."""
        rows = {
            self.index_of[item_id]: result.fused_vector
            for item_id, result in knowledge.items()
            if result and item_id in self.index_of
        }
        if not rows:
            return
        vectors = self.ranker.item_vectors
        if len(vectors) < len(self.item_ids):
            vectors = torch.cat([vectors, vectors.new_zeros((len(self.item_ids) - len(vectors), vectors.size(1)))])
        else:
            vectors = vectors.clone()  # requests in flight keep the table they started with
        vectors[list(rows)] = torch.tensor(list(rows.values()), dtype=vectors.dtype, device=vectors.device)
        self.ranker.set_item_vectors(vectors)

    def _restore(self) -> None:
        """Re-apply the IDs this replica assigned before, then load popularity and freshness."""
        assigned = {}
        for key, raw in self.replica.scan(ASSIGNED):
            index, *codes = (int(part) for part in raw.decode().split(","))
            assigned[key[len(ASSIGNED) :].decode()] = (index, *codes)
        for index, *codes in assigned.values():
            self.artifact.ids.restore(str(index), tuple(codes))
        if assigned:
            self._add_items(assigned, self._tokenizer_for(assigned))
        if self.ranker.config.side.knowledge:  # knowledge published since training, new items' included
            self._set_item_vectors(dict(self.replica.all_knowledge()))
        self._popularity = self.replica.popularity()
        items = list(self.replica.items())
        self._catalog = {item.item_id for item in items}
        self._fresh = sorted((item.first_seen.isoformat(), item.item_id) for item in items)[-FRESH_POOL:]
        self._cold = None

    # -- ranking ------------------------------------------------------------------------------

    def rank(self, requests: Sequence[RankRequest]) -> list[RankResponse]:
        """Answer a batch: one scoring pass for all candidate lists, one beam search for all top-k requests."""
        answers: list[RankResponse | None] = [None] * len(requests)
        scoring: list[tuple[int, list[int]]] = []
        generating: list[tuple[int, list[int]]] = []
        with self._lock:
            for position, request in enumerate(requests):
                history = self._history(request.user_id)
                if not history:
                    answers[position] = self._cold_start(request)
                elif request.candidates is not None:
                    scoring.append((position, history))
                else:
                    generating.append((position, history))
            if scoring:
                self._score(requests, scoring, answers)
            if generating:
                self._generate(requests, generating, answers)
        return [answer for answer in answers if answer is not None]

    def _history(self, user_id: str) -> list[int]:
        user = self.replica.user(user_id)
        if user is None:
            return []
        return [self.index_of[entry.item_id] for entry in user.history if entry.item_id in self.index_of]

    def _score(
        self, requests: Sequence[RankRequest], rows: list[tuple[int, list[int]]], answers: list[RankResponse | None]
    ) -> None:
        known = [[item for item in requests[p].candidates or [] if item in self.index_of] for p, _ in rows]
        scores = self.ranker.score(
            [requests[p].user_id for p, _ in rows],
            [history for _, history in rows],
            [[self.index_of[item] for item in items] for items in known],
            self._contexts([requests[p].user_id for p, _ in rows]),
        )
        for (position, _), items, row in zip(rows, known, scores, strict=True):
            request = requests[position]
            order = sorted(zip(items, row.tolist(), strict=True), key=lambda pair: -pair[1])
            unknown = [item for item in request.candidates or [] if item not in self.index_of]
            answers[position] = self._answer(request, order, RankSource.MODEL, unknown)

    def _generate(
        self, requests: Sequence[RankRequest], rows: list[tuple[int, list[int]]], answers: list[RankResponse | None]
    ) -> None:
        k = max(requests[p].k for p, _ in rows)
        items, scores = self.ranker.recommend(
            [requests[p].user_id for p, _ in rows],
            [history for _, history in rows],
            k=k,
            beam_size=max(k, self.settings.serving_beam_size),
            exclude_history=self.settings.serving_exclude_history,
            contexts=self._contexts([requests[p].user_id for p, _ in rows]),
        )
        for (position, _), item_row, score_row in zip(rows, items.tolist(), scores.tolist(), strict=True):
            request = requests[position]
            found = [(self.item_ids[i], s) for i, s in zip(item_row, score_row, strict=True) if i >= 0]
            answers[position] = self._answer(request, found[: request.k], RankSource.MODEL, [])

    def _contexts(self, users: list[str]) -> list[UserContext] | None:
        """Per user, the side inputs this ranker reads (None for a TIGER ranker without any)."""
        side = self.ranker.config.side
        if not side.any:
            return None
        contexts = []
        for user_id in users:
            steps = None
            reasoning = self.replica.reasoning(user_id) if side.reasoning != "none" else None
            if reasoning is not None and reasoning.pattern_version == self.artifact.patterns_version:
                steps = np.asarray(reasoning.step_vectors, dtype=np.float32)
            interests = self.replica.interests(user_id) if side.beyond_log else None
            beyond = (
                [self.index_of[i.item_id] for i in interests.interests if i.item_id in self.index_of]
                if interests
                else []
            )
            contexts.append(UserContext(steps, beyond))
        return contexts

    def _cold_start(self, request: RankRequest) -> RankResponse:
        """Popular and fresh items: scored by popularity (log share), the freshest breaking ties."""
        view = self._cold_start_view()
        unknown: list[str] = []
        if request.candidates is not None:
            pool = [item for item in request.candidates if item in self.index_of or item in self._catalog]
            unknown = [item for item in request.candidates if item not in self.index_of and item not in self._catalog]
        else:
            fresh = [item_id for _, item_id in reversed(self._fresh)][: request.k]
            pool = list(dict.fromkeys(_interleave(view.popular[: request.k], fresh)))[: request.k]
        ordered = sorted(pool, key=view.key, reverse=True)
        scored = [(item, float(np.log((self._popularity.get(item, 0) + 1) / view.total))) for item in ordered]
        return self._answer(request, scored, RankSource.COLD_START, unknown)

    def _cold_start_view(self) -> ColdStartView:
        """The popularity ranking, built once per change of the features rather than once per request."""
        if self._cold is None:
            recency = {item_id: rank for rank, (_, item_id) in enumerate(self._fresh)}
            popularity = dict(self._popularity)

            def key(item_id: str) -> tuple[int, int]:
                return (popularity.get(item_id, 0), recency.get(item_id, -1))

            popular = sorted(popularity, key=key, reverse=True)
            self._cold = ColdStartView(sum(popularity.values()) + 1, key, popular)
        return self._cold

    def _answer(
        self, request: RankRequest, scored: list[tuple[str, float]], source: RankSource, unknown: list[str]
    ) -> RankResponse:
        return RankResponse(
            user_id=request.user_id,
            items=[ScoredItem(item_id=item, score=score) for item, score in scored],
            unknown=unknown,
            source=source,
            model_version=self.version,
        )


def _interleave(first: list[str], second: list[str]) -> list[str]:
    merged: list[str] = []
    for index in range(max(len(first), len(second))):
        merged.extend(row[index] for row in (first, second) if index < len(row))
    return merged
