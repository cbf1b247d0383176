"""Decoding over the catalog's prefix trie: beam search that only ever extends a beam to a real item's next code,
and the prefixes of a set of candidate items, each decoded once."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from models.t5_passes import Cache
from models.tokenizer import PAD, SemanticIdTokenizer

# One decoder step: (newest token of each beam [B, beams, 1], cache) -> (log-probabilities over the vocabulary
# [B, beams, vocab], the cache extended by that token)
Step = Callable[[torch.Tensor, Cache | None], tuple[torch.Tensor, Cache]]


def beam_search(
    step: Step,
    size: int,
    tables: Sequence[torch.Tensor],
    tokenizer: SemanticIdTokenizer,
    beam_size: int,
    banned: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Items [B, n] and log-likelihoods [B, n] of the best n <= beam_size valid code sequences of ``size`` users, best
    first; ``tables`` are the trie's per-level child tables, ``banned`` [B, m] items never to end a beam on."""
    device = tables[0].device
    tokens = torch.full((size, 1, 1), PAD, dtype=torch.long, device=device)  # newest token of each beam
    nodes = torch.zeros((size, 1), dtype=torch.long, device=device)  # trie node each beam has reached
    scores = torch.zeros((size, 1), device=device)
    past = None
    last = tokenizer.num_levels - 1
    for level, (offset, table) in enumerate(zip(tokenizer.offsets, tables, strict=True)):
        width = table.size(1)  # the codes in use at this level: the rest cannot extend any beam
        log_probs, past = step(tokens, past)
        # log-softmax over the whole vocabulary, so scores are the model's likelihoods, as ``score`` computes them
        log_probs = log_probs[..., offset : offset + width]
        # dead beams (score -inf, node -1) index row 0 harmlessly: their score keeps them out
        children = table[nodes.clamp(min=0)].long()  # [B, beams, width]
        candidates = (scores.unsqueeze(-1) + log_probs).masked_fill(children < 0, float("-inf"))
        if banned is not None and level == last:
            seen = (children.unsqueeze(-1) == banned[:, None, None, :]).any(-1)
            candidates = candidates.masked_fill(seen, float("-inf"))
        scores, picked = candidates.flatten(1).topk(min(beam_size, candidates[0].numel()), dim=1)
        nodes = children.flatten(1).gather(1, picked)
        beams = candidates.size(1)
        rows = (torch.arange(size, device=device).unsqueeze(1) * beams + picked // width).flatten()
        past = [(key[rows], value[rows]) for key, value in past]
        tokens = (picked % width + offset).unsqueeze(-1)
    return nodes.masked_fill(scores == float("-inf"), -1), scores


def extend_prefixes(
    node: torch.Tensor, token: torch.Tensor, vocab: int, past: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The next level of the candidates' prefix trie: its distinct prefixes per user (padded to the widest user),
    each candidate's row among them, and the key/value cache of each row's parent prefix."""
    size, rows = node.size(0), past[0][0].size(0) // node.size(0)
    keys = node * vocab + token  # a prefix = (parent row, appended token)
    distinct = [torch.unique(row, return_inverse=True) for row in keys]
    widest = max(values.numel() for values, _ in distinct)
    prefixes = torch.zeros((size, widest), dtype=torch.long, device=node.device)  # padding repeats row 0's prefix
    for row, (values, _) in enumerate(distinct):
        prefixes[row, : values.numel()] = values
        prefixes[row, values.numel() :] = values[0]
    next_node = torch.stack([inverse for _, inverse in distinct])
    parents = (torch.arange(size, device=node.device)[:, None] * rows + prefixes // vocab).flatten()
    cache = [(key[parents], value[parents]) for key, value in past]
    return (prefixes % vocab).unsqueeze(-1), next_node, cache
