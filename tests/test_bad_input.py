"""Generated bad input among good input: every bad record is dead-lettered, every good one processed."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from infra.synthetic import generate
from reaseq.contracts import Interaction, UserFeatureUpdate
from reaseq.deadletters import DeadLetter
from reaseq.settings import Settings
from reaseq.topics import DEAD_LETTERS, EVENTS, ITEMS, USER_FEATURES, topic_name
from reaseq.wire import ContractError, decode, encode
from tests.conftest import Spawn
from tests.support import TopicReader, latest_by_key, send, send_contracts

GOOD = {
    "schema_version": 1,
    "user_id": "u",
    "item_id": "item-00000",
    "kind": "view",
    "event_time": "2026-05-01T00:00:00Z",
}
BAD_RECORDS = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.builds(lambda field: orjson.dumps({k: v for k, v in GOOD.items() if k != field}), st.sampled_from(sorted(GOOD))),
    st.builds(
        lambda field, value: orjson.dumps({**GOOD, field: value}),
        st.sampled_from(["kind", "event_time", "user_id"]),
        st.integers() | st.lists(st.integers(), max_size=2),
    ),
    st.builds(
        lambda version: orjson.dumps({**GOOD, "schema_version": version}), st.integers(min_value=2, max_value=99)
    ),
    st.just(orjson.dumps({**GOOD, "user_id": "x" * 300_000})),  # oversize
)


def is_bad(raw: bytes, settings: Settings) -> bool:
    try:
        decode(Interaction, raw, settings.max_message_bytes)
    except ContractError:
        return True
    return False


@hsettings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(bad=st.lists(BAD_RECORDS, min_size=150, max_size=150))
def test_bad_input_is_dead_lettered_and_good_input_around_it_is_processed(
    bad: list[bytes], settings: Settings, workers: Spawn
) -> None:
    bad = [raw for raw in bad if is_bad(raw, settings)]
    assert settings.kafka_bootstrap
    bootstrap = settings.kafka_bootstrap
    world = generate(n_items=30, n_users=20, n_events=300, seed=5)
    send_contracts(bootstrap, topic_name(settings, ITEMS), world.items, lambda m: m.item_id)  # type: ignore[attr-defined]
    good = [(i.user_id.encode(), encode(i)) for i in world.interactions]
    mixed = [
        record for pair in zip(good, [(b"bad", raw) for raw in bad] + [None] * len(good)) for record in pair if record
    ]
    send(bootstrap, topic_name(settings, EVENTS), mixed)
    workers("w0")

    expected = {}
    for interaction in world.interactions:
        expected[interaction.user_id] = expected.get(interaction.user_id, 0) + 1
    users = TopicReader(bootstrap, topic_name(settings, USER_FEATURES))
    users.wait_for(
        lambda rs: (
            {k.decode(): UserFeatureUpdate.model_validate_json(v).version for k, v in latest_by_key(rs).items()}
            == expected
        ),
        timeout_s=120,
    )
    dead = TopicReader(bootstrap, topic_name(settings, DEAD_LETTERS)).wait_for(
        lambda rs: len(rs) >= len(bad), timeout_s=60
    )
    letters = [DeadLetter.from_record(r.key, r.value, r.headers) for r in dead]
    assert sorted(d.value or b"" for d in letters) == sorted(bad)  # each bad record exactly once, bytes intact
    assert all(d.detail and d.source_topic == topic_name(settings, EVENTS) and d.source_offset >= 0 for d in letters)
