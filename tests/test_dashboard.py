"""The operator web page end to end: real broker, stream, enrichment and interest workers, Triton with a tiny trained
model, the page's server as a process, and the page rendered by headless Chromium (DOM and a screenshot)."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from infra.ports import free_port
from infra.processes import spawn_async_worker, spawn_cli, stop_process
from infra.synthetic import SyntheticWorld, generate
from infra.triton import TritonServer
from reaseq.contracts import KnowledgeChain
from reaseq.runfiles import RunState, TritonProcess, save_run_state
from reaseq.settings import Settings
from tests.conftest import Spawn
from tests.support import publish_world
from tests.test_triton import train_tiny
from training.registry import ModelRepository

pytestmark = pytest.mark.integration

WINDOW = (1280, 1600)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_json(url: str, condition: Callable[[Any], bool], timeout_s: float) -> Any:
    """Poll ``url`` until its JSON satisfies ``condition``; connection errors count as not yet."""
    deadline = time.monotonic() + timeout_s
    body: Any = None
    while time.monotonic() < deadline:
        try:
            body = get_json(url)
            if condition(body):
                return body
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not get there within {timeout_s}s; last answer: {str(body)[:500]}")


def chromium(url: str, *flags: str) -> str:
    """Run headless Chromium on ``url`` with ``flags``; its stdout."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: `make browser`")
    with tempfile.TemporaryDirectory() as profile:
        command = [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--virtual-time-budget=4000", *flags, url,
        ]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def rendered_dom(url: str) -> str:
    return chromium(url, "--dump-dom")


def screenshot(url: str, path: Path) -> np.ndarray:
    chromium(url, f"--screenshot={path}", f"--window-size={WINDOW[0]},{WINDOW[1]}")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == WINDOW
        return np.asarray(image.convert("RGB"))


@contextmanager
def dashboard(settings: Settings, bootstrap: str) -> Iterator[str]:
    """The page's server as a process (``reaseq web``) on a free loopback port; its base URL once it answers."""
    port = free_port()
    process = spawn_cli(settings, bootstrap, ["web", "--port", str(port)], "web")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_json(f"{base}/api/health", lambda body: bool(body["components"]), timeout_s=60)
        yield base
    finally:
        stop_process(process.pid, timeout_s=15)


def assert_item_rendered(dom: str, item: dict[str, Any]) -> None:
    """The item's title and each reasoning step, in order, with its rationale."""
    start = dom.index(f'data-item="{item["item_id"]}"')
    card = dom[start : dom.index("</article>", start)]
    assert html.escape(item["title"], quote=False) in card
    positions = [card.index(f'data-step="{step["name"]}"') for step in item["steps"]]
    assert positions == sorted(positions) and len(positions) == len(KnowledgeChain.step_names())
    for step in item["steps"]:
        assert html.escape(step["rationale"], quote=False) in card


def test_operator_page_shows_health_enriched_items_and_a_user_lookup(
    settings: Settings, workers: Spawn, tmp_path: Path, one_torch_thread: None
) -> None:
    bootstrap = settings.kafka_bootstrap
    assert bootstrap
    settings = settings.model_copy(update={"model_store": tmp_path / "store"})
    workers("w0")
    world: SyntheticWorld = generate(40, 10, 200, seed=5)
    titles = {item.item_id: item.title for item in world.items}
    async_workers = [
        spawn_async_worker(settings, bootstrap, "enrich"),
        spawn_async_worker(settings, bootstrap, "interests"),
    ]
    triton: TritonServer | None = None
    try:
        with dashboard(settings, bootstrap) as base:
            publish_world(settings, bootstrap, world).close()
            items = wait_json(
                f"{base}/api/items/recent?limit=100", lambda body: len(body) == len(world.items), timeout_s=180
            )
            assert {item["item_id"]: item["title"] for item in items} == titles
            assert all([step["name"] for step in item["steps"]] == KnowledgeChain.step_names() for item in items)

            user = world.interactions[-1].user_id
            history = [i.item_id for i in world.interactions if i.user_id == user][::-1]  # newest first
            answer = get_json(f"{base}/api/users/{user}")
            assert [entry["item_id"] for entry in answer["history"]["entries"]] == history[: settings.history_length]
            assert answer["recommendations"] == {
                "served": False,
                "detail": "no ranker served: Triton is not running in the local stack, and none is configured",
            }

            health = get_json(f"{base}/api/health")
            states = {c["name"]: c["state"] for c in health["components"]}
            assert states["broker"] == "ok" and states["Triton"] == "off" and states["dead letters"] == "ok"
            rates = {
                topic: max(p["rates"][topic] for p in health["throughput"]["points"]) for topic in ("items", "events")
            }
            assert health["throughput"]["totals"]["events"] == len(world.interactions) and all(rates.values()), rates

            dom = rendered_dom(f"{base}/")
            for item in items[:3]:
                assert_item_rendered(dom, item)
            assert 'data-component="stream workers"' in dom and 'data-topic="events"' in dom

            # A model: the interest worker fills interests and reasoning steps, Triton serves the ranker.
            version = train_tiny(settings, bootstrap, tmp_path, seed=1)
            ModelRepository(settings).publish(version)
            triton = TritonServer(settings, bootstrap).start()
            assert triton.process is not None
            endpoints = triton.endpoints
            served = TritonProcess(
                triton.process.pid, endpoints.host, endpoints.http_port, endpoints.grpc_port, endpoints.metrics_port
            )
            save_run_state(settings, RunState(bootstrap=bootstrap, triton=served))
            answer = wait_json(
                f"{base}/api/users/{user}",
                lambda body: bool(body["interests"] and body["reasoning"] and body["recommendations"].get("items")),
                timeout_s=120,
            )
            recommended = [r["item_id"] for r in answer["recommendations"]["items"]]
            assert answer["recommendations"]["source"] == "model" and not set(recommended) & set(history)
            assert all(r["title"] == titles[r["item_id"]] for r in answer["recommendations"]["items"])

            lookup = f"{base}/?user={user}"
            dom = rendered_dom(lookup)
            section = dom[dom.index('id="user"') :]
            for table in ("history", "interests", "recommendations"):
                assert f'id="{table}"' in section, table
            for item_id in set(history) | set(recommended):
                assert html.escape(titles[item_id], quote=False) in section, item_id
            for step in answer["reasoning"]["steps"]:
                assert html.escape(step, quote=False) in section

            pixels = screenshot(lookup, tmp_path / "dashboard.png")
            assert (
                pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
            )  # a rendered page, not blank
    finally:
        if triton is not None:
            triton.stop()
        for process in async_workers:
            stop_process(process.pid, timeout_s=15)


def status_of(
    url: str, headers: dict[str, str] | None = None, opener: urllib.request.OpenerDirector | None = None
) -> int:
    try:
        with (opener or urllib.request.build_opener()).open(
            urllib.request.Request(url, headers=headers or {})
        ) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code
    except urllib.error.URLError:
        return -1


def test_beyond_loopback_the_page_needs_its_token(settings: Settings) -> None:
    assert settings.kafka_bootstrap
    port = free_port()
    args = ["web", "--host", "0.0.0.0", "--port", str(port)]
    unguarded = spawn_cli(settings, settings.kafka_bootstrap, args, "web-unguarded")
    assert unguarded.wait(timeout=60) == 2
    assert "set REASEQ_WEB_TOKEN" in (settings.state_dir / "run" / "web-unguarded.log").read_text()

    guarded = settings.model_copy(update={"web_token": SecretStr("page-token")})
    process = spawn_cli(guarded, settings.kafka_bootstrap, args, "web")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while status_of(f"{base}/api/health") != 401:  # connection refused (-1 below) until it listens
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.5)
        assert status_of(f"{base}/api/health", {"Authorization": "Bearer not-it"}) == 401
        assert status_of(f"{base}/api/health", {"Authorization": "Bearer page-token"}) == 200
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        assert status_of(f"{base}/?token=page-token", opener=browser) == 200  # the link an operator is given
        assert status_of(f"{base}/api/health", opener=browser) == 200  # the page's own requests carry the cookie
    finally:
        stop_process(process.pid, timeout_s=15)
