"""The operator web page's server (aiohttp): one static page and the JSON API it reads.

- ``GET /``: the page (``dashboard/static/index.html``; ``?user=ID`` opens a user lookup).
- ``GET /api/health``: component health and the throughput series (``dashboard.health``).
- ``GET /api/items/recent?limit=N``: the newest enriched items with their reasoning chains and titles.
- ``GET /api/users/{user_id}?k=N``: a user's history, reasoning steps, beyond-log interests and Triton's top k.

With ``REASEQ_WEB_TOKEN`` set, every route asks for it: ``Authorization: Bearer <token>``, or ``?token=<token>`` once
in a browser (kept in an HttpOnly cookie). The page refuses to bind beyond loopback without one.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.resources import files

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from dashboard.follow import TopicFollower, View
from dashboard.health import HealthSampler
from reaseq.runfiles import triton_endpoints
from reaseq.settings import Settings
from serving.client import RankClient, RankRequestError, RankUnavailableError

log = logging.getLogger(__name__)

RECOMMENDATIONS_K = 10
TOKEN_COOKIE = "reaseq_token"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ExposedWithoutToken(ValueError):
    """The page was asked to bind beyond loopback with no token set."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def check_exposure(host: str, settings: Settings) -> None:
    """ExposedWithoutToken where ``host`` reaches beyond this machine and no token guards the page."""
    if settings.web_token is None and not is_loopback(host):
        raise ExposedWithoutToken(
            f"the operator page binds {host}, beyond loopback: set REASEQ_WEB_TOKEN (it then asks every visitor for "
            "it), or bind 127.0.0.1"
        )


def _offered_token(request: web.Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return request.query.get("token") or request.cookies.get(TOKEN_COOKIE)


def token_guard(token: str) -> Middleware:
    """Middleware answering 401 to a request without ``token``; a token given in the URL is kept in a cookie, so the
    page's own requests carry it."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        offered = _offered_token(request)
        if offered is None or not hmac.compare_digest(offered.encode(), token.encode()):
            raise web.HTTPUnauthorized(
                text="this page needs its token: open /?token=<REASEQ_WEB_TOKEN>, or send Authorization: Bearer"
            )
        response = await handler(request)
        if "token" in request.query:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response

    return guard


class Recommender:
    """Top-k recommendations from Triton (``infra.stack.triton_endpoints``), one RankClient per endpoint it has seen."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[str, RankClient] = {}

    def recommend(self, user_id: str, k: int) -> View:
        """Triton's answer, or ``served: false`` with the reason when no ranker is served."""
        endpoints = triton_endpoints(self.settings)
        if endpoints is None:
            return {
                "served": False,
                "detail": "no ranker served: Triton is not running in the local stack, and none is configured",
            }
        url = endpoints.grpc_url
        client = self._clients.get(url) or self._clients.setdefault(
            url, RankClient(url, "grpc", timeout_s=2.0, retries=1)
        )
        try:
            answer = client.rank(user_id, k=k)
        except (RankRequestError, RankUnavailableError) as error:
            return {"served": True, "detail": f"the ranker did not answer: {error}", "items": []}
        return {
            "served": True,
            "source": answer.source.value,
            "model_version": answer.model_version,
            "items": [item.model_dump() for item in answer.items],
        }


FOLLOWER = web.AppKey("follower", TopicFollower)
SAMPLER = web.AppKey("sampler", HealthSampler)
RECOMMENDER = web.AppKey("recommender", Recommender)
PAGE = web.AppKey("page", bytes)


def _json(body: object) -> web.Response:
    return web.json_response(body, dumps=lambda value: orjson.dumps(value).decode())


def _int_query(request: web.Request, name: str, default: int, most: int) -> int:
    try:
        value = int(request.query.get(name, default))
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer") from None
    return max(1, min(value, most))


async def page(request: web.Request) -> web.Response:
    return web.Response(body=request.app[PAGE], content_type="text/html", charset="utf-8")


async def health(request: web.Request) -> web.Response:
    follower = request.app[FOLLOWER]
    return _json({**request.app[SAMPLER].snapshot(), "followed_records": follower.records})


async def recent_items(request: web.Request) -> web.Response:
    follower = request.app[FOLLOWER]
    return _json(follower.recent_items(_int_query(request, "limit", 20, follower.recent_limit)))


async def user(request: web.Request) -> web.Response:
    follower, user_id = request.app[FOLLOWER], request.match_info["user_id"]
    k = _int_query(request, "k", RECOMMENDATIONS_K, 100)
    recommendations = await asyncio.get_running_loop().run_in_executor(
        None, request.app[RECOMMENDER].recommend, user_id, k
    )
    for item in recommendations.get("items", []):
        item["title"] = follower.title(item["item_id"])
    return _json({**follower.user(user_id), "recommendations": recommendations})


def create_app(settings: Settings, bootstrap: str, sample_interval_s: float = 2.0) -> web.Application:
    """The page and its API, behind the settings' token if one is set; the follower and sampler threads run while the
    app does."""
    token = settings.web_token
    app = web.Application(middlewares=[token_guard(token.get_secret_value())] if token is not None else [])
    app[FOLLOWER] = TopicFollower(settings, bootstrap)
    app[SAMPLER] = HealthSampler(settings, bootstrap, sample_interval_s)
    app[RECOMMENDER] = Recommender(settings)
    app[PAGE] = (files("dashboard") / "static" / "index.html").read_bytes()
    app.router.add_get("/", page)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/items/recent", recent_items)
    app.router.add_get("/api/users/{user_id}", user)

    async def background(app: web.Application) -> AsyncIterator[None]:
        app[FOLLOWER].start()
        app[SAMPLER].start()
        yield
        app[SAMPLER].stop()
        app[FOLLOWER].stop()

    app.cleanup_ctx.append(background)
    return app


def run_dashboard(settings: Settings, bootstrap: str, host: str, port: int, sample_interval_s: float = 2.0) -> None:
    """Serve the operator page on ``host:port`` until SIGINT or SIGTERM (blocking); ExposedWithoutToken where it
    would bind beyond loopback unguarded."""
    check_exposure(host, settings)
    log.info("operator page serving", extra={"url": f"http://{host}:{port}/", "bootstrap": bootstrap})
    # Per-request access lines would drown the structured log; the page polls every few seconds.
    web.run_app(create_app(settings, bootstrap, sample_interval_s), host=host, port=port, print=None, access_log=None)
