"""The semantic-ID writer against a real broker: one ID per new item and version, in one order, none repeated after a
restart, and the next collision code for an item whose code prefix is taken."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from infra.broker import EmbeddedBroker
from kafka_adapter.provision import provision
from models.ranker_inputs import SideInputs
from reaseq.contracts import ItemFeatureUpdate, ItemSemanticId
from reaseq.settings import Settings
from reaseq.topics import ITEM_FEATURES, ITEM_IDS, topic_name
from reaseq.wire import decode
from tests.support import TopicReader, send_contracts
from tests.support.versions import build_model, item
from training.registry import version_of
from workers.item_ids import IdWriter

pytestmark = pytest.mark.integration


def published(reader: TopicReader, settle_s: float = 1.0) -> list[ItemSemanticId]:
    reader.poll(settle_s)
    return [decode(ItemSemanticId, record.value or b"", 1 << 20) for record in reader.records]


def run_until(writer: IdWriter, reader: TopicReader, count: int, timeout_s: float = 60.0) -> list[ItemSemanticId]:
    deadline = time.monotonic() + timeout_s
    while len(found := published(reader, 0.1)) < count:
        assert time.monotonic() < deadline, f"{len(found)} of {count} IDs published"
        writer.poll()
    return found


def test_one_id_per_new_item_in_one_order_and_none_repeated_after_a_restart(
    broker: EmbeddedBroker, settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"model_store": tmp_path / "store"})
    provision(settings, broker.bootstrap, 1)
    version = version_of(build_model(settings.model_store / "tiny" / "20260501T000000Z-test", SideInputs()))
    features = topic_name(settings, ITEM_FEATURES)
    twins = [item("n1", "A brass desk lamp", 100), item("n2", "A brass desk lamp", 101)]  # one text: one prefix
    catalog: list[ItemFeatureUpdate] = [*twins, item("i3", "trained already", 102), item("n3", "Wool socks", 103)]
    send_contracts(broker.bootstrap, features, catalog, lambda m: m.item_id)  # type: ignore[attr-defined]
    reader = TopicReader(broker.bootstrap, topic_name(settings, ITEM_IDS))

    writer = IdWriter(settings, broker.bootstrap)
    first = run_until(writer, reader, 3)
    writer.poll()  # a republished item gets no second ID
    send_contracts(broker.bootstrap, features, [twins[0]], lambda m: m.item_id)  # type: ignore[attr-defined]
    for _ in range(5):
        writer.poll()
    writer.close()
    ids = published(reader)
    assert sorted((record.model_version, record.item_id) for record in ids) == [(version, f"n{n}") for n in (1, 2, 3)]
    codes = {record.item_id: tuple(record.codes) for record in ids}
    prefix = codes["n1"][:-1]
    assert codes["n2"][:-1] == prefix and len(set(codes.values())) == 3
    sharing = sorted(code[-1] for code in codes.values() if code[:-1] == prefix)  # n3 may share the prefix too
    assert sharing == list(range(sharing[0], sharing[0] + len(sharing))), "each the next free collision code"

    restarted = IdWriter(settings, broker.bootstrap)  # reads its IDs back: repeats none, goes on from them
    send_contracts(broker.bootstrap, features, [item("n4", "A brass desk lamp", 104)], lambda m: m.item_id)  # type: ignore[attr-defined]
    after = run_until(restarted, reader, 4)
    for _ in range(5):
        restarted.poll()
    restarted.close()
    assert published(reader) == after and after[:3] == first == ids
    assert after[3].item_id == "n4" and tuple(after[3].codes) == (*prefix, sharing[-1] + 1)
