"""Sequence loaders (S3-Rec files, LC-Rec files, the source topics) and the leave-one-out split."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from kafka_adapter.provision import provision
from models.item_text import MAX_TEXT_CHARS, build_item_text
from reaseq.contracts import CatalogItem, Interaction, InteractionKind
from reaseq.settings import Settings
from reaseq.topics import EVENTS, ITEMS, topic_name
from tests.support import send, send_contracts
from training.datasets import (
    Examples,
    SequenceData,
    leave_one_out,
    load_dataset,
    load_from_topics,
    load_lcrec,
    load_s3rec,
)
from training.errors import DatasetError

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def write_s3rec(folder: Path) -> Path:
    path = folder / "Tiny.txt"
    path.write_text("1 3 1 2\n2 5 4\n\n7 2 2 5 1\n")
    return path


def write_lcrec(folder: Path) -> tuple[Path, Path]:
    inter, item = folder / "Tiny.inter.json", folder / "Tiny.item.json"
    inter.write_bytes(orjson.dumps({"0": [2, 0, 1], "1": [3, 0]}))
    item.write_bytes(
        orjson.dumps(
            {
                "0": {
                    "title": "Beaker 250 ml",
                    "description": "<p>Borosilicate &amp; graduated.</p>",
                    "brand": "Kemtek",
                    "categories": "Lab,Glassware",
                },
                "1": {"title": "Pipette", "description": "", "brand": "", "categories": ""},
                "2": {"title": "Scale", "description": "word " * 300, "brand": "Precisa", "categories": "Lab"},
                "3": {
                    "title": "Stirrer",
                    "description": "Quiet\n\n  motor",
                    "brand": "Labwise",
                    "categories": "Lab, Mixing",
                },
            }
        )
    )
    return inter, item


def test_s3rec_ids_are_one_based_and_indices_zero_based(tmp_path: Path) -> None:
    data = load_s3rec(write_s3rec(tmp_path))
    assert data.name == "Tiny"
    assert data.item_ids == ["1", "2", "3", "4", "5"]  # item count = largest id
    assert data.sequences == {"1": [2, 0, 1], "2": [4, 3], "7": [1, 1, 4, 0]}
    assert data.item_text is None
    assert (data.num_items, data.num_interactions) == (5, 9)
    assert [data.item_ids[i] for i in data.sequences["7"]] == ["2", "2", "5", "1"]


def test_s3rec_rejects_zero_ids(tmp_path: Path) -> None:
    path = tmp_path / "Bad.txt"
    path.write_text("1 0 2\n")
    with pytest.raises(ValueError, match="1-based"):
        load_s3rec(path)


def test_an_s3rec_folder_with_item_text_keyed_zero_based_loads_its_text(tmp_path: Path) -> None:
    write_s3rec(tmp_path)  # ids 1..5
    texts = {str(index): {"title": f"item {index + 1}", "categories": "Lab"} for index in range(5)}
    (tmp_path / "Tiny.item.json").write_bytes(orjson.dumps(texts))
    data = load_dataset(tmp_path)
    assert data.item_text is not None and len(data.item_text) == data.num_items == 5
    assert all(data.item_text[index].startswith(f"item {data.item_ids[index]}") for index in range(5))  # id = index + 1
    assert data.catalog is not None and data.catalog[4].categories == ["Lab"]


def test_item_text_keyed_one_based_is_named_as_the_wrong_file(tmp_path: Path) -> None:
    write_s3rec(tmp_path)
    (tmp_path / "Tiny.item.json").write_bytes(orjson.dumps({str(i): {"title": "t"} for i in range(1, 6)}))
    with pytest.raises(DatasetError, match=r"Tiny\.item\.json: keys are 0-based item indices .* below 5, got 5"):
        load_dataset(tmp_path)
    (tmp_path / "Tiny.item.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="expected an object keyed by 0-based item index"):
        load_dataset(tmp_path)


def test_lcrec_sequences_and_item_text(tmp_path: Path) -> None:
    data = load_lcrec(*write_lcrec(tmp_path))
    assert data.name == "Tiny"
    assert data.item_ids == ["0", "1", "2", "3"]
    assert data.sequences == {"0": [2, 0, 1], "1": [3, 0]}
    assert data.item_text is not None
    assert data.item_text[0] == "Beaker 250 ml; brand: Kemtek; categories: Lab > Glassware; Borosilicate & graduated."
    assert data.item_text[1] == "Pipette"
    assert data.item_text[3] == "Stirrer; brand: Labwise; categories: Lab > Mixing; Quiet motor"
    long = data.item_text[2]
    assert long.startswith("Scale; brand: Precisa; categories: Lab; word word")
    assert len(long) <= MAX_TEXT_CHARS and long.endswith("word")  # cut at a word boundary


def test_lcrec_without_item_file_has_no_text(tmp_path: Path) -> None:
    inter, _ = write_lcrec(tmp_path)
    data = load_lcrec(inter, None, name="x")
    assert data.item_text is None and data.name == "x" and data.num_items == 4


def test_item_text_is_deterministic_and_capped() -> None:
    text = build_item_text("T", "x" * 2000, None, ["A"])
    assert text == build_item_text("T", "x" * 2000, None, ["A"])
    assert len(text) == MAX_TEXT_CHARS  # one long token: hard cut rather than losing the whole field


def test_load_dataset_dispatches_on_folders_and_files(tmp_path: Path) -> None:
    s3rec_dir, lcrec_dir = tmp_path / "s3rec", tmp_path / "lcrec"
    s3rec_dir.mkdir()
    lcrec_dir.mkdir()
    s3rec_file = write_s3rec(s3rec_dir)
    inter, _ = write_lcrec(lcrec_dir)
    assert load_dataset(s3rec_dir) == load_dataset(s3rec_file) == load_s3rec(s3rec_file)
    assert load_dataset(lcrec_dir) == load_dataset(inter) == load_lcrec(*write_lcrec(lcrec_dir))
    assert load_dataset(lcrec_dir).item_text is not None
    with pytest.raises(ValueError, match="expected one"):
        load_dataset(tmp_path)
    with pytest.raises(ValueError, match="not a known"):
        load_dataset(lcrec_dir / "Tiny.item.json")


def examples(part: Examples, user: str) -> list[tuple[list[int], int]]:
    return [(h, t) for u, h, t in zip(part.users, part.histories, part.targets) if u == user]


def test_leave_one_out_boundaries() -> None:
    data = SequenceData(
        item_ids=[str(i) for i in range(100)],
        sequences={
            "short": [1, 2],
            "three": [10, 11, 12],
            "six": [20, 21, 22, 23, 24, 25],
            "long": list(range(30, 55)),
        },
        item_text=None,
        name="t",
    )
    split = leave_one_out(data, max_history=4)
    assert split.num_items == 100
    assert "short" not in split.train.users + split.valid.users + split.test.users  # fewer than 3: dropped
    assert split.valid.users == split.test.users == ["three", "six", "long"]

    assert examples(split.train, "three") == []  # one training item: nothing to predict it from
    assert examples(split.valid, "three") == [([10], 11)]
    assert examples(split.test, "three") == [([10, 11], 12)]
    assert examples(split.train, "six") == [([20], 21), ([20, 21], 22), ([20, 21, 22], 23)]
    assert examples(split.valid, "six") == [([20, 21, 22, 23], 24)]
    assert examples(split.test, "six") == [([21, 22, 23, 24], 25)]  # capped, and includes the valid item

    long = data.sequences["long"]
    train_long = examples(split.train, "long")
    assert [t for _, t in train_long] == long[1:-2]  # every prefix of the training part, in order
    assert all(h == long[max(0, i + 1 - 4) : i + 1] for i, (h, _) in enumerate(train_long))
    held_out = {long[-1], long[-2]}
    assert not held_out & {i for h, t in train_long for i in [*h, t]}  # no valid/test target leaks into training
    assert long[-1] not in examples(split.valid, "long")[0][0]
    assert len(split.train) == sum(len(s) - 3 for s in data.sequences.values() if len(s) >= 3)


def test_leave_one_out_rejects_empty_history() -> None:
    with pytest.raises(ValueError):
        leave_one_out(SequenceData([], {}, None, "t"), max_history=0)


def test_load_from_topics_reads_dedupes_and_orders(settings: Settings) -> None:
    assert settings.kafka_bootstrap
    bootstrap = settings.kafka_bootstrap
    provision(settings, bootstrap, 1)
    items = [
        CatalogItem(
            item_id="b", title="Beaker v2", brand="Kemtek", categories=["Lab"], event_time=T0 + timedelta(hours=2)
        ),
        CatalogItem(item_id="b", title="Beaker v1", event_time=T0 + timedelta(hours=1)),  # older version, arrives late
        CatalogItem(item_id="a", title="Atlas", description="<b>maps</b>", event_time=T0),
        CatalogItem(item_id="c", title="Compass", event_time=T0),
    ]
    send_contracts(bootstrap, topic_name(settings, ITEMS), items, lambda m: m.item_id)  # type: ignore[attr-defined]
    send(bootstrap, topic_name(settings, ITEMS), [(b"z", b'{"schema_version": 1, "item_id": "z"}')])  # no title

    def event(user: str, item: str, minutes: int, event_id: str | None = None) -> Interaction:
        when = T0 + timedelta(minutes=minutes)
        return Interaction(event_id=event_id, user_id=user, item_id=item, kind=InteractionKind.VIEW, event_time=when)

    events = [
        event("u1", "c", 3, "e3"),
        event("u1", "a", 1, "e1"),
        event("u1", "b", 2, "e2"),
        event("u1", "c", 9, "e2"),  # redelivered id with other content: still a duplicate
        event("u2", "x", 5),  # item never published: still an item
        event("u2", "a", 4),
        event("u2", "a", 4),  # same content, no id: the derived ids collide
    ]
    send_contracts(bootstrap, topic_name(settings, EVENTS), events, lambda m: m.user_id)  # type: ignore[attr-defined]
    send(bootstrap, topic_name(settings, EVENTS), [(b"u1", b"{not json"), (b"u1", b'{"schema_version": 9}')])

    data = load_from_topics(settings, bootstrap, timeout_s=30)
    assert data.item_ids == ["a", "b", "c", "x"]
    assert data.sequences == {"u1": [0, 1, 2], "u2": [0, 3]}
    assert data.item_text == {0: "Atlas; maps", 1: "Beaker v2; brand: Kemtek; categories: Lab", 2: "Compass"}
    assert data.name == settings.topic_prefix.rstrip(".")
