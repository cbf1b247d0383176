"""Prefix trie over fixed-length code sequences (semantic IDs), stored as one dense table per level.

Constrained beam search keeps, for every beam, the id of the trie node its prefix has reached; the allowed next
codes of all beams are then one gather from the level's table, with no Python work per beam.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


class CodeTrie:
    """The set of valid code sequences, all of length L, each ending at a value (an item index).

    ``tables[l]`` has one row per distinct prefix of length ``l`` and ``codes_per_level[l]`` columns: entry
    ``[node, c]`` is the node reached by appending code ``c`` (at the last level: the item index), or -1 where
    no valid sequence continues that way.
    """

    def __init__(self, item_codes: Mapping[int, Sequence[int]], codes_per_level: Sequence[int]) -> None:
        self.codes_per_level = list(codes_per_level)
        depth = len(self.codes_per_level)
        # node ids of the prefixes of each length; the empty prefix is node 0 of level 0
        root: dict[tuple[int, ...], int] = {(): 0}
        node_ids = [root] + [{} for _ in range(depth - 1)]
        edges: list[list[tuple[int, int, int]]] = [[] for _ in range(depth)]
        seen: dict[tuple[int, ...], int] = {}
        for item, raw in item_codes.items():
            codes = tuple(int(c) for c in raw)
            if len(codes) != depth:
                raise ValueError(f"item {item} has {len(codes)} codes, expected {depth}")
            for level, code in enumerate(codes):
                if not 0 <= code < self.codes_per_level[level]:
                    raise ValueError(f"item {item}: code {code} out of range at level {level}")
            if codes in seen:
                raise ValueError(f"items {seen[codes]} and {item} share the code sequence {codes}")
            seen[codes] = item
            for level in range(depth):
                parent = node_ids[level][codes[:level]]
                if level + 1 < depth:
                    child = node_ids[level + 1].setdefault(codes[: level + 1], len(node_ids[level + 1]))
                else:
                    child = item
                edges[level].append((parent, codes[level], child))
        self.tables: list[torch.Tensor] = []
        for level in range(depth):
            # int32 halves the memory of the widest level (distinct 2-code prefixes x 256 on a large catalog)
            table = torch.full((len(node_ids[level]), self.codes_per_level[level]), -1, dtype=torch.int32)
            if edges[level]:
                parents, links, children = torch.tensor(edges[level], dtype=torch.long).unbind(1)
                table[parents, links] = children.to(torch.int32)
            self.tables.append(table)
        self._items = seen

    def __len__(self) -> int:
        return len(self._items)

    def lookup(self, codes: Sequence[int]) -> int | None:
        """The item whose full code sequence is ``codes``, or None."""
        return self._items.get(tuple(int(c) for c in codes))

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Codes that extend ``prefix`` towards at least one valid sequence (empty for an invalid or full prefix)."""
        if len(prefix) >= len(self.tables):
            return []
        node = 0
        for level, code in enumerate(prefix):
            if not 0 <= code < self.codes_per_level[level]:
                return []
            node = int(self.tables[level][node, code])
            if node < 0:
                return []
        return torch.nonzero(self.tables[len(prefix)][node] >= 0).flatten().tolist()
