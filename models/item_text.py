"""The text an item is encoded from: one line from its catalog fields, the same for training, enrichment and serving."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

MAX_TEXT_CHARS = 512

_TAG = re.compile(r"<[^>]*>")

_SPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Text without markup or HTML entities, whitespace collapsed."""
    return _SPACE.sub(" ", _TAG.sub(" ", html.unescape(text))).strip()


def build_item_text(
    title: str,
    description: str = "",
    brand: str | None = None,
    categories: Sequence[str] = (),
    max_chars: int = MAX_TEXT_CHARS,
) -> str:
    """One compact line per item; the description goes last because it is what the cap cuts."""
    brand_name = clean_text(brand or "")
    names = [name for name in map(clean_text, categories) if name]
    parts = [
        clean_text(title),
        f"brand: {brand_name}" if brand_name else "",
        f"categories: {' > '.join(names)}" if names else "",
        clean_text(description),
    ]
    text = "; ".join(part for part in parts if part)
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    # Cut at a word boundary unless that would lose most of the budget (one very long token).
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip(" ;,")
