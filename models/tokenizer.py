"""The ranker's token vocabulary over semantic IDs: code tokens per level, user tokens, and the catalog's trie."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from models.trie import CodeTrie

PAD = 0  # also the decoder start token, as in T5

EOS = 1

IGNORE = -100  # label of a padded target position (cross-entropy's ignore_index)

NUM_SPECIAL = 2


class SemanticIdTokenizer:
    """Token vocabulary: [pad, eos] + one block per code level + ``num_user_buckets`` user tokens.

    Code ``c`` of level ``l`` is token ``offsets[l] + c``. Users are hashed with blake2b (stable across processes
    and machines, unlike ``hash``) into the user buckets, as in TIGER.
    """

    def __init__(
        self,
        item_codes: Mapping[int, Sequence[int]],
        codes_per_level: Sequence[int],
        num_user_buckets: int = 2000,
    ) -> None:
        self.item_codes = {int(item): tuple(int(c) for c in codes) for item, codes in item_codes.items()}
        self.codes_per_level = list(codes_per_level)
        self.num_user_buckets = num_user_buckets
        self.trie = CodeTrie(self.item_codes, self.codes_per_level)  # also validates the table
        self.offsets = [NUM_SPECIAL + sum(self.codes_per_level[:level]) for level in range(self.num_levels)]
        self.user_offset = NUM_SPECIAL + sum(self.codes_per_level)
        self.vocab_size = self.user_offset + num_user_buckets
        # item index -> its L code tokens (-1 rows where no item has that index): vectorised target lookup
        self.target_table = torch.full((max(self.item_codes, default=-1) + 1, self.num_levels), -1, dtype=torch.long)
        if self.item_codes:
            items = torch.tensor(list(self.item_codes), dtype=torch.long)
            codes = torch.tensor(list(self.item_codes.values()), dtype=torch.long)
            self.target_table[items] = codes + torch.tensor(self.offsets, dtype=torch.long)

    def with_items(self, item_codes: Mapping[int, Sequence[int]]) -> SemanticIdTokenizer:
        """This tokenizer plus ``item_codes`` (an index it has keeps its codes); this one is left as it is.

        The trie and the target table are extended, not rebuilt, so taking a few new items costs copies of the
        tables rather than Python work per catalog item.
        """
        new = {
            int(item): tuple(int(c) for c in codes)
            for item, codes in item_codes.items()
            if int(item) not in self.item_codes
        }
        extended = copy.copy(self)
        extended.trie = self.trie.with_items(new)  # also validates the new items
        extended.item_codes = {**self.item_codes, **new}
        rows = max(len(self.target_table), max(new, default=-1) + 1)
        extended.target_table = torch.cat(
            [self.target_table, self.target_table.new_full((rows - len(self.target_table), self.num_levels), -1)]
        )
        if new:
            codes = torch.tensor(list(new.values()), dtype=torch.long)
            extended.target_table[list(new)] = codes + torch.tensor(self.offsets, dtype=torch.long)
        return extended

    @property
    def num_levels(self) -> int:
        return len(self.codes_per_level)

    def user_token(self, user: str) -> int:
        digest = hashlib.blake2b(user.encode(), digest_size=8).digest()
        return self.user_offset + int.from_bytes(digest, "big") % self.num_user_buckets

    def encode_target(self, item: int) -> list[int]:
        """The item's L code tokens. No eos: every semantic ID has length L and decoding stops after L codes."""
        return [offset + code for offset, code in zip(self.offsets, self.item_codes[item], strict=True)]

    def encode_history(self, user: str, history: Sequence[int]) -> list[int]:
        """[user] + the codes of each history item (most recent last) + [eos].

        Items without a semantic ID (e.g. published after the table was built) are skipped, so serving never
        fails on a new item; truncating to the most recent items is the caller's choice.
        """
        tokens = [self.user_token(user)]
        for item in history:
            if item in self.item_codes:
                tokens.extend(self.encode_target(item))
        tokens.append(EOS)
        return tokens

    def decode(self, tokens: Sequence[int]) -> int | None:
        """The item whose code tokens are ``tokens`` (trailing eos/pad ignored), or None if there is none."""
        tokens = list(tokens)
        while tokens and tokens[-1] in (PAD, EOS):
            tokens.pop()
        if len(tokens) != self.num_levels:
            return None
        codes = [token - offset for token, offset in zip(tokens, self.offsets, strict=True)]
        if any(not 0 <= code < width for code, width in zip(codes, self.codes_per_level, strict=True)):
            return None
        return self.trie.lookup(codes)

    def to_json(self) -> dict[str, Any]:
        return {
            "codes_per_level": self.codes_per_level,
            "num_user_buckets": self.num_user_buckets,
            "item_codes": [[item, *codes] for item, codes in sorted(self.item_codes.items())],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SemanticIdTokenizer:
        item_codes = {row[0]: row[1:] for row in data["item_codes"]}
        return cls(item_codes, data["codes_per_level"], data["num_user_buckets"])
