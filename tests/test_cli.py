"""The operator CLI against a running embedded stack: up, publish, status, replay, down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from infra.synthetic import generate
from reaseq.contracts import UserFeatureUpdate
from reaseq.settings import Settings
from reaseq.topics import USER_FEATURES, topic_name
from reaseq.wire import encode
from tests.support import TINY_TRAINING, TopicReader, latest_by_key


def reaseq(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def isolated_env(tmp_path: Path, tag: str) -> dict[str, str]:
    env = {
        **os.environ,
        "REASEQ_STATE_DIR": str(tmp_path / "state"),
        "REASEQ_MODEL_STORE": str(tmp_path / "store"),
        "REASEQ_TOPIC_PREFIX": f"c{tag}.",
        "REASEQ_APP_ID": f"cli-{tag}",
        "COLUMNS": "250",  # rich wraps at 80 columns when not on a terminal
    }
    env.pop("KAFKA_BOOTSTRAP", None)
    return env


def test_up_publish_status_replay_down(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    env = isolated_env(tmp_path, tag)
    settings = Settings(state_dir=tmp_path / "state", topic_prefix=f"c{tag}.", app_id=f"cli-{tag}")
    world = generate(n_items=20, n_users=10, n_events=200, seed=3)
    items, events = tmp_path / "items.jsonl", tmp_path / "events.jsonl"
    items.write_bytes(
        b"\n".join([encode(i) for i in world.items] + [b'{"schema_version": 1, "item_id": "no-title"}']) + b"\n"
    )
    events.write_bytes(b"\n".join(encode(i) for i in world.interactions) + b"\n")

    reaseq(env, "up", "--workers", "1")
    try:
        bootstrap = json.loads((tmp_path / "state" / "run" / "stack.json").read_text())["bootstrap"]
        assert "accepted 20, rejected 1" in reaseq(env, "publish", "items", str(items))
        assert "accepted 200, rejected 0" in reaseq(env, "publish", "events", str(events))
        reader = TopicReader(bootstrap, topic_name(settings, USER_FEATURES))
        versions = lambda rs: sum(UserFeatureUpdate.model_validate_json(v).version for v in latest_by_key(rs).values())  # noqa: E731
        before = latest_by_key(reader.wait_for(lambda rs: versions(rs) == 200))

        status = reaseq(env, "status")
        assert "serving generation 1" in status and f"c{tag}.events" in status and "lag" in status

        assert "generation 2 caught up and now serves" in reaseq(env, "replay")
        assert "serving generation 2" in reaseq(env, "status")
        # The rebuilt generation re-derives byte-identical user features from the source topics.
        assert latest_by_key(reader.poll(2.0)) == before
        run_state = json.loads((tmp_path / "state" / "run" / "stack.json").read_text())
        assert [w["generation"] for w in run_state["workers"]] == [2]

        # Interactions published after a point in time: a replay from then keeps only those in the histories.
        time.sleep(1.5)
        cut = datetime.now(UTC)
        time.sleep(1.5)
        late = generate(n_items=20, n_users=10, n_events=30, seed=4, start=datetime(2027, 1, 1, tzinfo=UTC))
        events.write_bytes(b"\n".join(encode(i) for i in late.interactions) + b"\n")
        reaseq(env, "publish", "events", str(events))
        reader.wait_for(lambda rs: versions(rs) == 230)
        assert "generation 3 caught up" in reaseq(env, "replay", "--from", cut.isoformat())
        expected = Counter(i.user_id.encode() for i in late.interactions)

        def latest_versions(rs):
            return {k: UserFeatureUpdate.model_validate_json(v).version for k, v in latest_by_key(rs).items()}

        # Histories of generation 3 hold only the interactions published after the cut.
        reader.wait_for(lambda rs: {k: latest_versions(rs)[k] for k in expected} == dict(expected))
    finally:
        reaseq(env, "down")
    assert not (tmp_path / "state" / "run" / "stack.json").exists()


def test_up_train_promote_rank_down(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    env = isolated_env(tmp_path, tag)
    world = generate(n_items=60, n_users=20, n_events=400, seed=5)
    dataset, config = tmp_path / "data", tmp_path / "tiny.json"
    dataset.mkdir()
    (dataset / "items.jsonl").write_bytes(b"\n".join(encode(i) for i in world.items) + b"\n")
    (dataset / "events.jsonl").write_bytes(b"\n".join(encode(i) for i in world.interactions) + b"\n{not json\n")
    config.write_text(json.dumps(TINY_TRAINING))

    started = reaseq(env, "up", "--dataset", str(dataset), "--train", "--config", str(config))
    try:
        assert "items: accepted 60, rejected 0" in started and "events: accepted 400, rejected 1" in started
        assert "trained" in started and "triton: grpc" in started and "operator page: http://127.0.0.1:" in started
        user = world.interactions[0].user_id
        ranked = reaseq(env, "rank", "--user", user, "--k", "3")
        assert f"{user}: model" in ranked and ranked.count("item-") == 3
        scored = reaseq(
            env,
            "rank",
            "--user",
            user,
            "--candidate",
            world.items[0].item_id,
            "--candidate",
            "nope",
            "--protocol",
            "http",
        )
        assert world.items[0].item_id in scored and "unknown candidates: nope" in scored
        assert "ranker version 1 ready" in reaseq(env, "status")
        assert "model version written" in reaseq(env, "train", "--from-topics", "--config", str(config))
        assert "Triton serves" in reaseq(env, "models", "promote")
        status = reaseq(env, "status")
        assert "ranker version 2 ready" in status and "model versions: 2" in status and "embedded reasoner" in status
        assert "w0.g1" in status and "/metrics" in status  # the stream worker's Prometheus exporter
        listed = reaseq(env, "models", "list")
        assert f"c{tag}/" in listed and " 2 " in listed  # the newest version, served as Triton's version 2
        metrics_port = json.loads((tmp_path / "state" / "run" / "stack.json").read_text())["triton"]["metrics_port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            assert b'nv_inference_request_success{model="ranker"' in response.read()
    finally:
        reaseq(env, "down")
    assert not (tmp_path / "state" / "run" / "stack.json").exists()
