"""Prefix trie over fixed-length code sequences (semantic IDs), stored as one dense table per level.

Constrained beam search keeps, for every beam, the id of the trie node its prefix has reached; the allowed next
codes of all beams are then one gather from the level's table, with no Python work per beam.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch


class CodeTrie:
    """The set of valid code sequences, all of length L, each ending at a value (an item index).

    ``tables[l]`` has one row per distinct prefix of length ``l`` and a column per code of level ``l`` up to the
    largest one in use: entry ``[node, c]`` is the node reached by appending code ``c`` (at the last level: the
    item index), or -1 where no valid sequence continues that way. Columns stop at the largest code in use, not at
    the codebook's size, because the collision level has a row per item prefix and its codes are mostly small: a
    codebook-wide table there would grow by a kilobyte per item. :meth:`with_items` adds items at the cost of a copy
    of the tables, not a rebuild.
    """

    def __init__(self, item_codes: Mapping[int, Sequence[int]], codes_per_level: Sequence[int]) -> None:
        self.codes_per_level = list(codes_per_level)
        if math.prod(self.codes_per_level) >= 2**62:
            raise ValueError(f"codebooks {self.codes_per_level} have more code sequences than a 64-bit key holds")
        items, codes = self._validated(item_codes)
        self._size = len(items)
        keys = np.zeros(len(items), dtype=np.int64)  # each item's prefix so far, as one number
        parents = np.zeros(len(items), dtype=np.int64)  # the node of that prefix at the current level
        tables: list[np.ndarray] = []
        for level, width in enumerate(self.codes_per_level):
            keys = keys * width + codes[:, level]
            if level + 1 < self.depth:
                children = np.unique(keys, return_inverse=True)[1]
            else:
                _, first, counts = np.unique(keys, return_index=True, return_counts=True)
                if (counts > 1).any():
                    twin = codes[first[np.argmax(counts > 1)]]
                    holders = items[(codes == twin).all(axis=1)][:2].tolist()
                    raise ValueError(f"items {holders[0]} and {holders[1]} share the code sequence {tuple(twin)}")
                children = items
            rows = int(parents.max()) + 1 if len(items) else 1
            table = np.full((rows, self._width(codes, level)), -1, dtype=np.int32)
            table[parents, codes[:, level]] = children
            tables.append(table)
            parents = children
        self.tables = [torch.from_numpy(table) for table in tables]

    @property
    def depth(self) -> int:
        return len(self.codes_per_level)

    def __len__(self) -> int:
        return self._size

    def with_items(self, item_codes: Mapping[int, Sequence[int]]) -> CodeTrie:
        """A new trie with these items added (this one is left as it is, for the requests reading it)."""
        items, codes = self._validated(item_codes)
        tables = [table.numpy() for table in self.tables]
        for level in range(self.depth):  # room for the new codes and for a new prefix per new item
            width = max(tables[level].shape[1], self._width(codes, level))
            extra = len(items) if level > 0 else 0
            grown = np.full((tables[level].shape[0] + extra, width), -1, dtype=np.int32)
            grown[: tables[level].shape[0], : tables[level].shape[1]] = tables[level]
            tables[level] = grown
        used = [len(table) for table in self.tables]
        for item, row in zip(items.tolist(), codes.tolist(), strict=True):
            node = 0
            for level, code in enumerate(row[:-1]):
                child = int(tables[level][node, code])
                if child < 0:
                    child = tables[level][node, code] = used[level + 1]
                    used[level + 1] += 1
                node = child
            if tables[-1][node, row[-1]] >= 0:
                raise ValueError(f"items {tables[-1][node, row[-1]]} and {item} share the code sequence {tuple(row)}")
            tables[-1][node, row[-1]] = item
        trie = object.__new__(CodeTrie)
        trie.codes_per_level = self.codes_per_level
        trie._size = self._size + len(items)
        trie.tables = [torch.from_numpy(table[:count]) for table, count in zip(tables, used, strict=True)]
        return trie

    def lookup(self, codes: Sequence[int]) -> int | None:
        """The item whose full code sequence is ``codes``, or None."""
        node = self._walk(codes)
        return None if node is None or len(codes) != self.depth else node

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Codes that extend ``prefix`` towards at least one valid sequence (empty for an invalid or full prefix)."""
        node = self._walk(prefix) if len(prefix) < self.depth else None
        if node is None or len(self.tables[len(prefix)]) == 0:
            return []
        return torch.nonzero(self.tables[len(prefix)][node] >= 0).flatten().tolist()

    def _walk(self, codes: Sequence[int]) -> int | None:
        """The node (at the last level, the item) reached by ``codes``, or None."""
        node = 0
        for level, code in enumerate(codes[: self.depth]):
            table = self.tables[level]
            if not 0 <= code < table.size(1) or node >= table.size(0):
                return None
            node = int(table[node, code])
            if node < 0:
                return None
        return node

    def _validated(self, item_codes: Mapping[int, Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Item indices [N] and their codes [N, L], each checked against the codebooks."""
        items = np.fromiter(item_codes, dtype=np.int64, count=len(item_codes))
        for item, codes in item_codes.items():
            if len(codes) != self.depth:
                raise ValueError(f"item {item} has {len(codes)} codes, expected {self.depth}")
        matrix = np.array(list(item_codes.values()), dtype=np.int64).reshape(len(items), self.depth)
        outside = (matrix < 0) | (matrix >= np.array(self.codes_per_level))
        if outside.any():
            row, level = np.argwhere(outside)[0]
            raise ValueError(f"item {items[row]}: code {matrix[row, level]} out of range at level {level}")
        return items, matrix

    @staticmethod
    def _width(codes: np.ndarray, level: int) -> int:
        return int(codes[:, level].max()) + 1 if len(codes) else 1
