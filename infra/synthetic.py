"""A generated catalog and interaction stream with planted structure, for the demo and the tests.

Items belong to departments with their own brands and product nouns; each user has a few interest
departments and mostly interacts inside them, with a popularity skew, so that sequence models have
something real to learn and the demo's histories read like shopping.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from reaseq.contracts import CatalogItem, Interaction, InteractionKind

DEPARTMENTS: dict[str, dict[str, list[str]]] = {
    "Skin Care": {
        "brands": ["Lumea", "Derma Pure", "Aqualis"],
        "nouns": ["face serum", "night cream", "cleansing gel", "sunscreen SPF 50", "eye cream", "toner"],
        "traits": ["hydrating", "fragrance-free", "vitamin C", "retinol", "gentle", "mattifying"],
    },
    "Hair Care": {
        "brands": ["Silkroot", "Mane & Co", "Verde"],
        "nouns": ["shampoo", "conditioner", "hair mask", "styling cream", "scalp oil", "dry shampoo"],
        "traits": ["sulfate-free", "volumising", "repairing", "curl-defining", "argan", "anti-frizz"],
    },
    "Outdoor": {
        "brands": ["Ridgeline", "Northpeak", "Trailhead"],
        "nouns": ["hiking backpack", "trekking poles", "rain jacket", "headlamp", "water filter", "camp stove"],
        "traits": ["ultralight", "waterproof", "packable", "insulated", "rechargeable", "rugged"],
    },
    "Lab Equipment": {
        "brands": ["Labwise", "Precisa", "Kemtek"],
        "nouns": ["pipette set", "digital scale", "magnetic stirrer", "beaker kit", "pH meter", "microscope slides"],
        "traits": ["calibrated", "autoclavable", "borosilicate", "high-precision", "compact", "anti-static"],
    },
    "Kitchen": {
        "brands": ["Copperleaf", "Hearth", "Mizu"],
        "nouns": [
            "chef knife",
            "cast iron skillet",
            "pour-over kettle",
            "spice grinder",
            "cutting board",
            "dutch oven",
        ],
        "traits": ["forged", "pre-seasoned", "stainless", "ergonomic", "walnut", "induction-ready"],
    },
}
_KIND_WEIGHTS = [
    (InteractionKind.VIEW, 0.6),
    (InteractionKind.CLICK, 0.25),
    (InteractionKind.CART, 0.1),
    (InteractionKind.PURCHASE, 0.05),
]


@dataclass(frozen=True)
class SyntheticWorld:
    items: list[CatalogItem]
    interactions: list[Interaction]  # in event-time order
    interests: dict[str, list[str]]  # user -> interest departments


def generate(n_items: int, n_users: int, n_events: int, seed: int = 7, start: datetime | None = None) -> SyntheticWorld:
    """A deterministic catalog, users with 1-3 interest departments, and their interactions."""
    rng = random.Random(seed)
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    departments = list(DEPARTMENTS)
    items: list[CatalogItem] = []
    by_department: dict[str, list[str]] = {d: [] for d in departments}
    for index in range(n_items):
        department = departments[index % len(departments)]
        spec = DEPARTMENTS[department]
        brand, noun, trait = rng.choice(spec["brands"]), rng.choice(spec["nouns"]), rng.choice(spec["traits"])
        item_id = f"item-{index:05d}"
        items.append(
            CatalogItem(
                item_id=item_id,
                title=f"{brand} {trait} {noun}",
                description=f"A {trait} {noun} from {brand}, made for everyday {department.lower()} routines.",
                brand=brand,
                categories=[department, noun],
                price=round(rng.uniform(4, 250), 2),
                attributes={"trait": trait},
                event_time=start + timedelta(seconds=index),
            )
        )
        by_department[department].append(item_id)
    interests = {f"user-{u:05d}": rng.sample(departments, rng.randint(1, 3)) for u in range(n_users)}
    users = list(interests)
    kinds, weights = zip(*_KIND_WEIGHTS)
    interactions: list[Interaction] = []
    clock = start + timedelta(seconds=n_items)
    for _ in range(n_events):
        user = rng.choice(users)
        department = rng.choice(interests[user]) if rng.random() < 0.9 else rng.choice(departments)
        pool = by_department[department]
        # Popularity skew: low indices inside a department are the bestsellers, but the tail is still shopped.
        item_id = pool[int(len(pool) * rng.random() ** 2)] if pool else items[0].item_id
        clock += timedelta(milliseconds=rng.randint(50, 5000))
        interactions.append(
            Interaction(user_id=user, item_id=item_id, kind=rng.choices(kinds, weights)[0], event_time=clock)
        )
    return SyntheticWorld(items=items, interactions=interactions, interests=interests)
