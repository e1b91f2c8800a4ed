"""The ASGI middleware and the FastAPI dependency, through httpx's ASGI transport.

Most tests decide on a memory store with a fake clock (nothing waits on real time); the Redis
tests use the shared server under the run's prefix, and the fault tests a private
``redis-server`` of their own, stopped or frozen mid-test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from buttress import ConfigurationError
from buttress.contrib._web import Engine, escape_key
from buttress.contrib.asgi import RateLimiter, RateLimitMiddleware
from buttress.contrib.fastapi import RateLimit, RateLimitExceeded, rate_limit_exceeded_handler
from buttress.ratelimit import Rate
from buttress.storage import MemoryStorage
from buttress.testing import FakeClock

from .._redis_server import PrivateRedis

PEER = ("1.2.3.4", 123)
JSON = {"accept": "application/json"}


async def plain_app(scope: Any, receive: Any, send: Any) -> None:
    """A bare ASGI app: ``ok`` over HTTP; over a WebSocket, accept, say hello, close."""
    if scope["type"] == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"x-app", b"yes")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "hello"})
        await send({"type": "websocket.close", "code": 1000})


def client(app: Any, peer: tuple[str, int] = PEER) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=peer)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def middleware(clock: FakeClock | None = None, **options: Any) -> RateLimitMiddleware:
    """The middleware over :func:`plain_app`, on a memory store with a fake clock."""
    options.setdefault("storage", MemoryStorage(clock=clock or FakeClock()))
    return RateLimitMiddleware(plain_app, **options)


async def handshake(app: Any, extensions: dict[str, Any] | None, path: str = "/ws") -> list[Any]:
    """Open a WebSocket by hand; return every message the app sent (waits at most 5 s)."""
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)
        if message["type"] == "websocket.close":
            inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})

    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": PEER,
        "server": ("test", 80),
        "subprotocols": [],
    }
    if extensions is not None:
        scope["extensions"] = extensions
    await asyncio.wait_for(app(scope, inbox.get, send), 5)
    return sent


def spy_decisions(
    monkeypatch: pytest.MonkeyPatch, engine: Engine
) -> list[tuple[str, tuple[Rate, ...], int]]:
    """Record every decision made by the engine's limiters, as (key, rates, cost).

    The middleware keeps a route's limiter and calls it (synchronously, on a memory store);
    the dependency goes through ``engine.adecide``: both reach the limiters made here.
    """
    calls: list[tuple[str, tuple[Rate, ...], int]] = []
    make = engine.limiter
    spied: set[int] = set()

    def limiter(rates: tuple[Rate, ...]) -> Any:
        found = make(rates)
        if id(found) not in spied:
            spied.add(id(found))
            hit, ahit = found.hit, found.ahit

            def spy_hit(key: str, cost: int = 1) -> Any:
                calls.append((key, found.rates, cost))
                return hit(key, cost)

            async def spy_ahit(key: str, cost: int = 1) -> Any:
                if found._direct is None:  # a memory limiter's ahit calls hit: counted there
                    calls.append((key, found.rates, cost))
                return await ahit(key, cost)

            monkeypatch.setattr(found, "hit", spy_hit)
            monkeypatch.setattr(found, "ahit", spy_ahit)
        return found

    monkeypatch.setattr(engine, "limiter", limiter)
    return calls


async def statuses(app: Any, paths: list[str], **request: Any) -> list[int]:
    async with client(app) as http:
        return [(await http.get(path, **request)).status_code for path in paths]


class TestRoutes:
    async def test_an_exact_route_has_its_own_limit(self):
        app = middleware(routes={"/login": "2/minute"})
        assert await statuses(app, ["/login"] * 3) == [200, 200, 429]
        assert await statuses(app, ["/other"]) == [200]  # unmatched, no defaults: free

    async def test_a_glob_counts_every_path_it_matches_together(self):
        app = middleware(routes={"/api/*": "3/minute"})
        assert await statuses(app, ["/api/a", "/api/b/c", "/api/d", "/api/a"]) == [
            200,
            200,
            200,
            429,
        ]
        assert await statuses(app, ["/apix", "/api"]) == [200, 200]  # not matched

    async def test_an_exact_path_wins_over_an_earlier_glob(self):
        app = middleware(routes={"/api/*": "5/minute", "/api/login": "1/minute"})
        assert await statuses(app, ["/api/login", "/api/login", "/api/x"]) == [200, 429, 200]

    async def test_the_first_matching_pattern_in_order_wins(self):
        app = middleware(routes={"/api/*": "1/minute", "/api/v2/*": "5/minute"})
        assert await statuses(app, ["/api/v2/x", "/api/v2/y"]) == [200, 429]
        app = middleware(routes={"/api/v2/*": "5/minute", "/api/*": "1/minute"})
        assert await statuses(app, ["/api/v2/x", "/api/v2/y", "/api/z", "/api/z"]) == [
            200,
            200,
            200,
            429,
        ]

    async def test_a_compiled_regex_must_match_the_whole_path(self):
        app = middleware(routes={re.compile(r"/users/\d+"): "1/minute"})
        assert await statuses(app, ["/users/1", "/users/2"]) == [200, 429]
        assert await statuses(app, ["/users/1/edit", "/users/x"]) == [200, 200]

    async def test_globs_follow_fnmatch(self):
        app = middleware(routes={"/v?/items": "1/minute", "/files/[ab]*": "1/minute"})
        assert await statuses(app, ["/v1/items", "/v2/items", "/v10/items"]) == [200, 429, 200]
        assert await statuses(app, ["/files/a1", "/files/b2", "/files/c3"]) == [200, 429, 200]

    async def test_a_route_replaces_the_defaults(self):
        app = middleware(default_limits="1/minute", routes={"/big": "3/minute"})
        assert await statuses(app, ["/big"] * 4) == [200, 200, 200, 429]
        assert await statuses(app, ["/small", "/small"]) == [200, 429]

    async def test_rate_objects_and_lists(self):
        app = middleware(routes={"/a": Rate(1, per=60), "/b": ["5/minute", Rate(1, per=3600)]})
        assert await statuses(app, ["/a", "/a", "/b", "/b"]) == [200, 429, 200, 429]


class TestDefaults:
    async def test_one_count_for_every_unmatched_path(self):
        app = middleware(default_limits="2/minute")
        assert await statuses(app, ["/a", "/b", "/c"]) == [200, 200, 429]

    async def test_several_default_limits(self):
        app = middleware(default_limits=["100 per day", "2 per hour"])
        async with client(app) as http:
            first = await http.get("/")
            assert first.headers["RateLimit-Policy"] == "100;w=86400, 2;w=3600"
            assert first.headers["RateLimit-Remaining"] == "1"
            await http.get("/")
            assert (await http.get("/")).status_code == 429

    async def test_no_limits_at_all_passes_everything_through(self):
        app = middleware()
        async with client(app) as http:
            response = await http.get("/")
        assert response.status_code == 200
        assert "RateLimit-Limit" not in response.headers


class TestExempt:
    async def test_exempt_paths_are_not_limited_and_get_no_headers(self):
        app = middleware(default_limits="1/minute", exempt=["/health", "/static/*"])
        async with client(app) as http:
            for path in ["/health", "/health", "/static/app.js", "/static/a/b.css"]:
                response = await http.get(path)
                assert response.status_code == 200
                assert "RateLimit-Limit" not in response.headers
            assert (await http.get("/")).status_code == 200
            assert (await http.get("/")).status_code == 429

    async def test_one_pattern_or_a_regex(self):
        app = middleware(default_limits="1/minute", exempt="/health")
        assert await statuses(app, ["/health"] * 3) == [200, 200, 200]
        app = middleware(default_limits="1/minute", exempt=[re.compile(r"/h.*")])
        assert await statuses(app, ["/health", "/hi", "/x", "/y"]) == [200, 200, 200, 429]

    async def test_exempt_wins_over_a_route(self):
        app = middleware(routes={"/api/*": "1/minute"}, exempt=["/api/health"])
        assert await statuses(app, ["/api/health"] * 3) == [200, 200, 200]


class TestApplicationLimits:
    async def test_application_limits_count_every_request(self):
        app = middleware(application_limits="3/minute", routes={"/a": "10/minute"})
        assert await statuses(app, ["/a", "/b", "/a", "/b"]) == [200, 200, 200, 429]

    async def test_decided_in_one_call_with_the_route_limits(self, monkeypatch):
        app = middleware(
            application_limits="5/minute", routes={"/a": "1/minute"}, default_limits="9/minute"
        )
        calls = spy_decisions(monkeypatch, app.limiter.engine)
        assert await statuses(app, ["/a", "/b"]) == [200, 200]
        assert [len(rates) for _, rates, _ in calls] == [2, 2]
        assert [rate.scope for rate in calls[0][1]] == ["route|/a", "global"]
        assert [rate.scope for rate in calls[1][1]] == ["default", "global"]
        assert {key for key, _, _ in calls} == {"1.2.3.4"}

    async def test_all_or_nothing(self):
        app = middleware(application_limits="5/minute", routes={"/a": "1/minute"})
        async with client(app) as http:
            assert (await http.get("/a")).status_code == 200
            for _ in range(3):  # rejected by the route: the application count is not touched
                assert (await http.get("/a")).status_code == 429
            response = await http.get("/b")
        assert response.status_code == 200
        assert response.headers["RateLimit-Remaining"] == "3"  # 5 - /a - /b
        assert response.headers["RateLimit-Policy"] == "5;w=60"

    async def test_the_binding_limit_is_in_the_headers(self):
        app = middleware(application_limits="2/minute", routes={"/a": "10/minute"})
        async with client(app) as http:
            response = await http.get("/a")
            assert response.headers["RateLimit-Limit"] == "2"
            assert response.headers["RateLimit-Policy"] == "10;w=60, 2;w=60"
            await http.get("/a")
            rejected = await http.get("/a", headers=JSON)
        assert rejected.status_code == 429
        assert rejected.json()["limit"] == "2 per 1 minute"


class TestHeaders:
    async def test_an_admitted_response_keeps_its_headers_and_gets_the_limits(self):
        app = middleware(default_limits="5/minute")
        async with client(app) as http:
            response = await http.get("/")
        assert response.text == "ok"
        assert response.headers["x-app"] == "yes"
        assert response.headers["RateLimit-Limit"] == "5"
        assert response.headers["RateLimit-Remaining"] == "4"
        assert response.headers["RateLimit-Reset"] == "60"
        assert response.headers["RateLimit-Policy"] == "5;w=60"
        assert "Retry-After" not in response.headers

    async def test_a_rejection_says_when_to_come_back(self):
        clock = FakeClock()
        app = middleware(clock, default_limits="2/minute")
        async with client(app) as http:
            await http.get("/")
            clock.advance(15)
            await http.get("/")
            clock.advance(20.5)
            rejected = await http.get("/")
            assert rejected.status_code == 429
            assert rejected.headers["Retry-After"] == "25"  # ceil(60 - 35.5)
            assert rejected.headers["RateLimit-Remaining"] == "0"
            assert rejected.headers["RateLimit-Reset"] == "25"
            clock.advance(25)
            assert (await http.get("/")).status_code == 200

    async def test_headers_off_keeps_retry_after_on_a_rejection(self):
        app = middleware(default_limits="1/minute", headers=False)
        async with client(app) as http:
            admitted = await http.get("/")
            rejected = await http.get("/")
        assert not [name for name in admitted.headers if "ratelimit" in name]
        assert not [name for name in rejected.headers if "ratelimit" in name]
        assert rejected.headers["Retry-After"] == "60"

    async def test_legacy_names(self):
        app = middleware(default_limits="1/minute", legacy_headers=True)
        async with client(app) as http:
            admitted = await http.get("/")
            rejected = await http.get("/")
        assert admitted.headers["X-RateLimit-Limit"] == "1"
        assert admitted.headers["X-RateLimit-Remaining"] == "0"
        assert abs(int(admitted.headers["X-RateLimit-Reset"]) - (time.time() + 60)) < 5
        assert "RateLimit-Limit" not in admitted.headers
        assert rejected.headers["Retry-After"] == "60"
        assert "X-RateLimit-Limit" in rejected.headers

    async def test_headers_the_app_set_itself_are_kept(self):
        async def own(scope: Any, receive: Any, send: Any) -> None:
            headers = [(b"RateLimit-Limit", b"7")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})

        app = RateLimitMiddleware(own, default_limits="5/minute")
        async with client(app) as http:
            response = await http.get("/")
        assert response.headers.get_list("RateLimit-Limit") == ["7"]
        assert "RateLimit-Remaining" not in response.headers


class TestBodies:
    async def test_json_for_json_clients(self):
        app = middleware(default_limits="1/minute")
        async with client(app) as http:
            await http.get("/")
            rejected = await http.get("/", headers=JSON)
        assert rejected.headers["content-type"] == "application/json"
        assert rejected.json() == {
            "error": "too_many_requests",
            "message": "Too Many Requests: 1 per 1 minute",
            "limit": "1 per 1 minute",
            "retry_after": 60,
        }
        assert rejected.headers["content-length"] == str(len(rejected.content))

    @pytest.mark.parametrize("accept", [None, "text/html", "text/html,application/json", "*/*"])
    async def test_text_otherwise(self, accept):
        app = middleware(default_limits="1/minute")
        headers = {} if accept is None else {"accept": accept}
        async with client(app) as http:
            await http.get("/")
            rejected = await http.get("/", headers=headers)
        assert rejected.headers["content-type"] == "text/plain; charset=utf-8"
        assert rejected.text == "Too Many Requests: 1 per 1 minute. Retry after 60 s.\n"

    async def test_a_rejection_never_reaches_the_app(self):
        reached: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            reached.append(scope["path"])
            await plain_app(scope, receive, send)

        limited = RateLimitMiddleware(app, default_limits="1/minute")
        assert await statuses(limited, ["/a", "/b"]) == [200, 429]
        assert reached == ["/a"]


class TestCost:
    async def test_a_fixed_cost(self):
        app = middleware(default_limits="5/minute", cost=2)
        async with client(app) as http:
            remaining = [(await http.get("/")).headers["RateLimit-Remaining"] for _ in range(2)]
            assert remaining == ["3", "1"]
            assert (await http.get("/")).status_code == 429

    async def test_a_cost_by_request(self):
        app = middleware(
            default_limits="5/minute", cost=lambda scope: 3 if scope["method"] == "POST" else 1
        )
        async with client(app) as http:
            assert (await http.post("/")).headers["RateLimit-Remaining"] == "2"
            assert (await http.post("/")).status_code == 429  # 3 more do not fit in 2
            assert (await http.get("/")).headers["RateLimit-Remaining"] == "1"

    async def test_a_cost_of_zero_is_not_counted(self):
        app = middleware(default_limits="1/minute", cost=lambda scope: 0)
        async with client(app) as http:
            for _ in range(3):
                response = await http.get("/")
                assert response.status_code == 200
                assert "RateLimit-Limit" not in response.headers

    def test_a_cost_that_could_never_be_admitted_is_refused(self):
        with pytest.raises(ValueError, match=r"cost 6 .* routes\['/a'\]"):
            middleware(routes={"/a": "5/minute"}, default_limits="10/minute", cost=6)

    async def test_a_bad_cost_from_a_callable_is_the_callers_error(self):
        app = middleware(default_limits="5/minute", cost=lambda scope: "two")
        async with client(app) as http:
            with pytest.raises(TypeError, match="cost must be an int"):
                await http.get("/")


class TestDynamicLimits:
    @staticmethod
    def by_plan(scope: Any) -> str | None:
        plan = dict(scope["headers"]).get(b"x-plan")
        if plan == b"free":
            return "1/minute"
        if plan == b"pro":
            return "3/minute"
        return None  # internal callers: unlimited

    async def test_the_limit_is_read_per_request(self):
        app = middleware(default_limits=self.by_plan)
        free = {"x-plan": "free"}
        pro = {"x-plan": "pro"}
        assert await statuses(app, ["/", "/"], headers=free) == [200, 429]
        async with client(app, peer=("5.6.7.8", 1)) as http:
            got = [(await http.get("/", headers=pro)).status_code for _ in range(4)]
        assert got == [200, 200, 200, 429]
        async with client(app) as http:
            response = await http.get("/")
        assert response.status_code == 200
        assert "RateLimit-Limit" not in response.headers

    async def test_dynamic_route_and_application_limits_together(self):
        app = middleware(
            routes={"/a": lambda scope: "2/minute"}, application_limits=lambda s: "3/minute"
        )
        assert await statuses(app, ["/a", "/a", "/a", "/b", "/b"]) == [200, 200, 429, 200, 429]

    async def test_a_bad_dynamic_limit_raises_naming_it(self):
        app = middleware(routes={"/a": lambda scope: "2/fortnight"})
        async with client(app) as http:
            with pytest.raises(ConfigurationError, match=r"routes\['/a'\].*2/fortnight"):
                await http.get("/a")


class TestKeys:
    async def test_each_client_address_counts_apart(self):
        app = middleware(default_limits="1/minute")
        async with client(app) as http:
            assert (await http.get("/")).status_code == 200
            assert (await http.get("/")).status_code == 429
        async with client(app, peer=("5.6.7.8", 1)) as http:
            assert (await http.get("/")).status_code == 200

    async def test_a_key_function_reads_the_scope(self):
        seen: list[Any] = []

        def api_key(scope: Any) -> str | None:
            seen.append(scope)
            return dict(scope["headers"]).get(b"x-api-key", b"").decode() or None

        app = middleware(default_limits="1/minute", key=api_key)
        alice, bob = {"x-api-key": "alice"}, {"x-api-key": "bob"}
        assert await statuses(app, ["/", "/"], headers=alice) == [200, 429]
        assert await statuses(app, ["/"], headers=bob) == [200]
        assert await statuses(app, ["/", "/"]) == [200, 200]  # None: not limited
        assert seen[0]["type"] == "http"
        assert seen[0]["path"] == "/"

    @pytest.mark.parametrize("key", ["a:b", "{tag}", "with space", "é" * 10, "x" * 5000])
    async def test_any_key_is_safe(self, key):
        app = middleware(default_limits="1/minute", key=lambda scope: key)
        assert await statuses(app, ["/", "/"]) == [200, 429]

    @pytest.mark.parametrize("key", [42, "", b"key"])
    async def test_a_key_function_must_return_a_str(self, key):
        app = middleware(default_limits="1/minute", key=lambda scope: key)
        async with client(app) as http:
            with pytest.raises(TypeError, match="key function must return"):
                await http.get("/")

    async def test_keys_that_escape_alike_stay_apart(self):
        keys = iter(["a:b", "a%3Ab"])
        app = middleware(default_limits="1/minute", key=lambda scope: next(keys))
        assert await statuses(app, ["/", "/"]) == [200, 200]

    async def test_no_peer_address_is_one_unknown_client(self):
        sent: list[Any] = []
        app = middleware(default_limits="1/minute")

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> Any:
            return {"type": "http.request", "body": b""}

        for _ in range(2):
            scope: dict[str, Any] = {"type": "http", "path": "/", "method": "GET", "headers": []}
            await app(scope, receive, send)
        starts = [message for message in sent if message["type"] == "http.response.start"]
        assert [message["status"] for message in starts] == [200, 429]


class TestTrustedProxies:
    async def test_spoofed_headers_from_an_untrusted_peer_change_nothing(self):
        app = middleware(default_limits="2/minute", trusted_proxies=["10.0.0.0/8"])
        async with client(app) as http:
            assert (await http.get("/", headers={"x-forwarded-for": "9.9.9.9"})).status_code == 200
            assert (await http.get("/", headers={"forwarded": "for=8.8.8.8"})).status_code == 200
            assert (await http.get("/")).status_code == 429  # all three were 1.2.3.4

    async def test_without_trusted_proxies_headers_are_ignored(self):
        app = middleware(default_limits="1/minute")
        async with client(app, peer=("10.0.0.1", 1)) as http:
            assert (await http.get("/", headers={"x-forwarded-for": "1.1.1.1"})).status_code == 200
            assert (await http.get("/", headers={"x-forwarded-for": "2.2.2.2"})).status_code == 429

    async def test_behind_trusted_proxies_the_right_most_untrusted_address_counts(self):
        app = middleware(default_limits="1/minute", trusted_proxies="10.0.0.0/8")
        async with client(app, peer=("10.0.0.1", 1)) as http:
            first = {"x-forwarded-for": "6.6.6.6, 5.5.5.5, 10.0.0.2"}
            assert (await http.get("/", headers=first)).status_code == 200
            # The client rewrites the left of the chain: still 5.5.5.5.
            again = {"x-forwarded-for": "7.7.7.7, 5.5.5.5, 10.0.0.2"}
            assert (await http.get("/", headers=again)).status_code == 429
            other = {"x-forwarded-for": "5.5.5.5, 4.4.4.4"}
            assert (await http.get("/", headers=other)).status_code == 200

    async def test_forwarded_and_several_header_lines(self):
        app = middleware(default_limits="1/minute", trusted_proxies=["10.0.0.0/8"])
        async with client(app, peer=("10.0.0.1", 1)) as http:
            forwarded = {"forwarded": 'for="[2001:db8::7]:4711", for=10.0.0.3'}
            assert (await http.get("/", headers=forwarded)).status_code == 200
            lines = [("x-forwarded-for", "2001:db8::8"), ("x-forwarded-for", "10.0.0.4")]
            assert (await http.get("/", headers=lines)).status_code == 429  # the same /64


class TestIPv6:
    async def test_a_64_bit_prefix_by_default(self):
        app = middleware(default_limits="1/minute")
        async with client(app, peer=("2001:db8::1", 1)) as http:
            assert (await http.get("/")).status_code == 200
        async with client(app, peer=("2001:db8::ffff:2", 1)) as http:
            assert (await http.get("/")).status_code == 429
        async with client(app, peer=("2001:db8:0:1::1", 1)) as http:
            assert (await http.get("/")).status_code == 200

    async def test_each_address_apart_with_128(self):
        app = middleware(default_limits="1/minute", ipv6_prefix=128)
        for peer in ["2001:db8::1", "2001:db8::2"]:
            async with client(app, peer=(peer, 1)) as http:
                assert (await http.get("/")).status_code == 200

    async def test_ipv4_mapped_addresses_are_ipv4(self):
        app = middleware(default_limits="1/minute")
        async with client(app, peer=("::ffff:1.2.3.4", 1)) as http:
            assert (await http.get("/")).status_code == 200
        assert await statuses(app, ["/"]) == [429]


class TestStarlette:
    def app(self, **options: Any) -> Starlette:
        async def home(request: Request) -> Response:
            return PlainTextResponse("home")

        async def chat(websocket: WebSocket) -> None:
            await websocket.accept()
            await websocket.send_text("hi")
            await websocket.close()

        options.setdefault("storage", MemoryStorage(clock=FakeClock()))
        return Starlette(
            routes=[Route("/", home), Route("/login", home), WebSocketRoute("/ws", chat)],
            middleware=[Middleware(RateLimitMiddleware, **options)],
        )

    async def test_http(self):
        app = self.app(default_limits="2/minute", routes={"/login": "1/minute"})
        async with client(app) as http:
            assert [(await http.get("/login")).status_code for _ in range(2)] == [200, 429]
            home = await http.get("/")
            assert (home.text, home.headers["RateLimit-Remaining"]) == ("home", "1")
            missing = await http.get("/missing")  # a 404 counts, and gets the headers
            assert missing.status_code == 404
            assert missing.headers["RateLimit-Remaining"] == "0"

    async def test_websocket_handshakes_are_limited(self):
        app = self.app(routes={"/ws": "1/minute"})
        extensions: dict[str, Any] = {"websocket.http.response": {}}
        accept, hello, close = await handshake(app, extensions)
        assert accept["type"] == "websocket.accept"
        assert dict(accept["headers"])[b"ratelimit-remaining"] == b"0"
        assert (hello["text"], close["type"]) == ("hi", "websocket.close")
        start, body = await handshake(app, extensions)
        assert start["status"] == 429
        headers = dict(start["headers"])
        assert headers[b"retry-after"] == b"60"
        assert headers[b"ratelimit-limit"] == b"1"
        assert body["body"] == b"Too Many Requests: 1 per 1 minute. Retry after 60 s.\n"
        assert await handshake(app, None) == [
            {"type": "websocket.close", "code": 1008, "reason": "Too Many Requests"}
        ]

    async def test_websockets_can_be_left_alone(self):
        app = self.app(default_limits="1/minute", websockets=False)
        for _ in range(3):
            accept, hello, _close = await handshake(app, None)
            assert accept == {"type": "websocket.accept", "subprotocol": None, "headers": []}
            assert hello["text"] == "hi"

    async def test_lifespan_runs_through(self):
        events: list[str] = []

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            events.append("startup")
            yield
            events.append("shutdown")

        app = Starlette(
            lifespan=lifespan,
            middleware=[Middleware(RateLimitMiddleware, default_limits="1/minute")],
        )
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        for kind in ["lifespan.startup", "lifespan.shutdown"]:
            inbox.put_nowait({"type": kind})
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        await asyncio.wait_for(app(scope, inbox.get, send), 5)
        assert events == ["startup", "shutdown"]
        assert [message["type"] for message in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]


class TestWebSocketDirect:
    """The handshake driven by hand, for servers with and without the denial extension."""

    @pytest.mark.parametrize("extensions", [None, {}, {"websocket.http.response.other": {}}])
    async def test_closed_with_1008_without_the_extension(self, extensions):
        app = middleware(routes={"/ws": "1/minute"})
        accepted = await handshake(app, extensions)
        assert accepted[0]["type"] == "websocket.accept"
        rejected = await handshake(app, extensions)
        assert rejected == [
            {"type": "websocket.close", "code": 1008, "reason": "Too Many Requests"}
        ]

    async def test_answered_with_a_429_with_the_extension(self):
        app = middleware(routes={"/ws": "1/minute"})
        extensions: dict[str, Any] = {"websocket.http.response": {}}
        await handshake(app, extensions)
        start, body = await handshake(app, extensions)
        assert start["type"] == "websocket.http.response.start"
        assert start["status"] == 429
        assert (b"retry-after", b"60") in start["headers"]
        assert body["type"] == "websocket.http.response.body"
        assert body["body"].startswith(b"Too Many Requests")

    async def test_a_client_gone_before_the_handshake(self):
        app = middleware(routes={"/ws": "1/minute"})
        await handshake(app, None)
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1001})
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "websocket", "path": "/ws", "headers": [], "client": PEER}
        await app(scope, inbox.get, send)
        assert sent == []


class TestOtherScopes:
    async def test_lifespan_is_passed_through_untouched(self):
        seen: list[Any] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append((scope, receive, send))

        limited = RateLimitMiddleware(app, default_limits="1/minute")

        async def receive() -> Any:
            return {"type": "lifespan.startup"}

        async def send(message: Any) -> None:
            pass

        for _ in range(3):
            scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
            await limited(scope, receive, send)
            assert seen[-1] == (scope, receive, send)
            assert seen[-1][0] is scope
            assert scope == {"type": "lifespan", "asgi": {"version": "3.0"}}


class TestFastAPI:
    @staticmethod
    def limiter(**options: Any) -> RateLimiter:
        options.setdefault("storage", MemoryStorage(clock=FakeClock()))
        return RateLimiter(**options)

    async def test_the_middleware(self):
        app = FastAPI()
        app.add_middleware(
            RateLimitMiddleware, routes={"/items/*": "2/minute"}, default_limits="5/minute"
        )

        @app.get("/items/{item}")
        async def item(item: int) -> dict[str, int]:
            return {"item": item}

        async with client(app) as http:
            first = await http.get("/items/1")
            assert first.json() == {"item": 1}
            assert first.headers["RateLimit-Remaining"] == "1"
            assert (await http.get("/items/2")).status_code == 200
            rejected = await http.get("/items/3", headers=JSON)
            assert rejected.status_code == 429
            assert rejected.json()["limit"] == "2 per 1 minute"
            assert (await http.get("/docs")).headers["RateLimit-Remaining"] == "4"

    def app_with_dependency(self, limiter: RateLimiter, *, handler: bool) -> FastAPI:
        app = FastAPI()
        if handler:
            app.add_exception_handler(RateLimitExceeded, rate_limit_exceeded_handler)
        login_limit = RateLimit("2/minute", limiter=limiter)

        @app.post("/login", dependencies=[Depends(login_limit)])
        async def login() -> dict[str, str]:
            return {"login": "ok"}

        @app.post("/logout", dependencies=[Depends(login_limit)])
        async def logout() -> dict[str, str]:
            return {"logout": "ok"}

        @app.get("/search")
        async def search(
            _: None = Depends(RateLimit("1/minute", limiter=limiter, scope="search")),
        ) -> dict[str, str]:
            return {"search": "ok"}

        @app.get("/find")
        async def find(
            _: None = Depends(RateLimit("1/minute", limiter=limiter, scope="search")),
        ) -> dict[str, str]:
            return {"find": "ok"}

        @app.get("/raw", dependencies=[Depends(RateLimit("5/minute", limiter=limiter))])
        async def raw() -> Response:
            return PlainTextResponse("raw")

        return app

    async def test_the_dependency_with_the_handler_answers_like_the_middleware(self):
        limiter = self.limiter()
        app = self.app_with_dependency(limiter, handler=True)
        async with client(app) as http:
            first = await http.post("/login")
            assert first.json() == {"login": "ok"}
            assert first.headers["RateLimit-Limit"] == "2"
            assert first.headers["RateLimit-Remaining"] == "1"
            assert first.headers["RateLimit-Policy"] == "2;w=60"
            await http.post("/login")
            rejected = await http.post("/login", headers=JSON)
            text = await http.post("/login")
        assert rejected.status_code == 429
        assert rejected.json() == {
            "error": "too_many_requests",
            "message": "Too Many Requests: 2 per 1 minute",
            "limit": "2 per 1 minute",
            "retry_after": 60,
        }
        assert rejected.headers["Retry-After"] == "60"
        assert rejected.headers["RateLimit-Remaining"] == "0"
        assert text.headers["content-type"] == "text/plain; charset=utf-8"
        assert text.text == "Too Many Requests: 2 per 1 minute. Retry after 60 s.\n"
        # The same body as the middleware's.
        alone = middleware(default_limits="2/minute")
        assert await statuses(alone, ["/", "/"]) == [200, 200]
        async with client(alone) as http:
            assert (await http.get("/", headers=JSON)).json() == rejected.json()

    async def test_without_the_handler_fastapi_answers_a_429_with_the_headers(self):
        app = self.app_with_dependency(self.limiter(), handler=False)
        async with client(app) as http:
            await http.post("/login")
            await http.post("/login")
            rejected = await http.post("/login")
        assert rejected.status_code == 429
        assert rejected.json() == {"detail": "Too Many Requests: 2 per 1 minute"}
        assert rejected.headers["Retry-After"] == "60"
        assert rejected.headers["RateLimit-Limit"] == "2"

    async def test_each_endpoint_counts_apart_unless_given_one_scope(self):
        app = self.app_with_dependency(self.limiter(), handler=True)
        async with client(app) as http:
            codes = [(await http.post(path)).status_code for path in ["/login"] * 3]
            assert codes == [200, 200, 429]
            assert (await http.post("/logout")).status_code == 200  # its own count
            assert (await http.get("/search")).status_code == 200
            assert (await http.get("/find")).status_code == 429  # shares "search"

    async def test_a_response_returned_by_the_endpoint_still_works(self):
        app = self.app_with_dependency(self.limiter(), handler=True)
        async with client(app) as http:
            response = await http.get("/raw")
        assert response.text == "raw"
        # FastAPI merges a dependency's headers only into responses it makes (documented).
        assert "RateLimit-Limit" not in response.headers

    async def test_with_the_middleware_one_set_of_headers_and_one_engine(self, monkeypatch):
        limiter = self.limiter(default_limits="10/minute", exempt=["/raw"])
        app = self.app_with_dependency(limiter, handler=True)
        app.add_middleware(RateLimitMiddleware, limiter=limiter)
        calls = spy_decisions(monkeypatch, limiter.engine)
        async with client(app) as http:
            response = await http.post("/login")
            assert response.headers.get_list("RateLimit-Limit") == ["2"]  # the dependency's
            assert response.headers.get_list("RateLimit-Remaining") == ["1"]
            other = await http.get("/docs")
            assert other.headers["RateLimit-Remaining"] == "8"  # the defaults: /login and /docs
            await http.post("/login")
            rejected = await http.post("/login")
        assert rejected.status_code == 429
        assert rejected.headers.get_list("Retry-After") == ["60"]
        assert len(calls) == 2 + 1 + 2 + 2  # the middleware once, then the dependency once

    async def test_dependency_cost_key_and_dynamic_limits(self):
        limiter = self.limiter()
        app = FastAPI()
        limit = RateLimit(
            lambda scope: "4/minute",
            limiter=limiter,
            cost=lambda scope: 2,
            key=lambda scope: dict(scope["headers"]).get(b"x-user", b"anon").decode(),
        )

        @app.get("/", dependencies=[Depends(limit)])
        async def home() -> str:
            return "home"

        async with client(app) as http:
            alice = {"x-user": "alice"}
            codes = [(await http.get("/", headers=alice)).status_code for _ in range(3)]
            assert codes == [200, 200, 429]
            assert (await http.get("/", headers={"x-user": "bob"})).status_code == 200

    async def test_no_limit_no_key_or_no_cost_is_not_limited(self):
        limiter = self.limiter()
        app = FastAPI()

        @app.get("/a", dependencies=[Depends(RateLimit(lambda s: None, limiter=limiter))])
        async def a() -> str:
            return "a"

        @app.get(
            "/b", dependencies=[Depends(RateLimit("1/minute", limiter=limiter, key=lambda s: None))]
        )
        async def b() -> str:
            return "b"

        @app.get(
            "/c", dependencies=[Depends(RateLimit("1/minute", limiter=limiter, cost=lambda s: 0))]
        )
        async def c() -> str:
            return "c"

        async with client(app) as http:
            for path in ["/a", "/b", "/c"]:
                for _ in range(2):
                    response = await http.get(path)
                    assert response.status_code == 200
                    assert "RateLimit-Limit" not in response.headers

    def test_bad_dependency_arguments(self):
        limiter = self.limiter()
        with pytest.raises(ConfigurationError, match="10/fortnight"):
            RateLimit("10/fortnight", limiter=limiter)
        with pytest.raises(TypeError, match="limiter must be a RateLimiter"):
            RateLimit("1/minute", limiter="memory://")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="scope"):
            RateLimit("1/minute", limiter=limiter, scope="")
        with pytest.raises(ValueError, match="cost"):
            RateLimit("1/minute", limiter=limiter, cost=-1)
        with pytest.raises(TypeError, match="key"):
            RateLimit("1/minute", limiter=limiter, key="ip")  # type: ignore[arg-type]

    def test_the_handler_refuses_other_exceptions(self):
        request = Request({"type": "http", "headers": []})
        with pytest.raises(TypeError, match="ValueError"):
            rate_limit_exceeded_handler(request, ValueError("no"))


class TestShortcuts:
    """The middleware's per-request shortcuts answer exactly as the general code does."""

    @pytest.mark.parametrize(
        "options",
        [
            {"default_limits": "50/minute"},
            {"default_limits": "50/minute; 1000/hour", "application_limits": "70/minute"},
            {"routes": {"/a": lambda scope: "30/minute"}, "application_limits": "90/minute"},
            {"routes": {"/a": "30/second"}, "application_limits": lambda scope: "90/minute"},
        ],
    )
    async def test_admitted_headers_are_the_response_headers_encoded(self, options):
        clock = FakeClock()
        limiter = RateLimiter(storage=MemoryStorage(clock=clock), **options)
        scope = {"type": "http", "path": "/a", "client": PEER, "headers": []}
        for step in [0.0, 0.3, 1e-7, 12.25, 0.5, 7.0000001, 3.9999999]:
            clock.advance(step)
            prepared = limiter._prepare(scope)
            assert prepared is not None
            plan, rates, key, cost = prepared
            assert rates == limiter.rates(scope)
            decision = await limiter.engine.adecide(key, rates, cost)
            expected = [
                (name.lower().encode(), value.encode())
                for name, value in limiter.response_headers(decision, rates)
            ]
            assert limiter._admitted_headers(decision, plan, rates) == expected

    @pytest.mark.parametrize(
        "peer", ["1.2.3.4", "2001:db8::1", "::ffff:1.2.3.4", "not-an-address", None]
    )
    def test_the_kept_peer_key_is_the_client_key_escaped(self, peer):
        limiter = RateLimiter(default_limits="1/minute")
        scope: dict[str, Any] = {"type": "http", "path": "/", "headers": []}
        if peer is not None:
            scope["client"] = (peer, 1)
        for _ in range(2):  # parsed, then kept
            prepared = limiter._prepare(scope)
            assert prepared is not None
            assert prepared[2] == escape_key(str(limiter.client_key(scope)))

    async def test_without_headers_the_app_gets_the_servers_send(self):
        sends: list[Any] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            sends.append(send)
            await plain_app(scope, receive, send)

        async def send(message: Any) -> None:
            pass

        async def receive() -> Any:
            return {"type": "http.request", "body": b""}

        limited = RateLimitMiddleware(app, default_limits="5/minute", headers=False)
        await limited({"type": "http", "path": "/", "headers": [], "client": PEER}, receive, send)
        assert sends == [send]


class TestBadInput:
    def test_a_bad_limit_string_names_itself_and_where(self):
        with pytest.raises(ConfigurationError, match=r"routes\['/a'\].*'10/fortnight'"):
            RateLimiter(routes={"/a": "10/fortnight"})
        with pytest.raises(ConfigurationError, match=r"default_limits.*'ten per hour'"):
            RateLimiter(default_limits="ten per hour")
        with pytest.raises(ConfigurationError, match=r"application_limits.*'5/minute; 1/x'"):
            RateLimiter(application_limits="5/minute; 1/x")
        with pytest.raises(ConfigurationError, match="'0/minute'"):
            RateLimitMiddleware(plain_app, default_limits=["1/second", "0/minute"])

    def test_bad_limit_types(self):
        with pytest.raises(TypeError, match=r"routes\['/a'\].*42"):
            RateLimiter(routes={"/a": 42})  # type: ignore[dict-item]

    @pytest.mark.parametrize("pattern", [42, b"/a", "", re.compile(rb"/a"), None])
    def test_bad_pattern_types(self, pattern):
        with pytest.raises(TypeError, match="pattern"):
            RateLimiter(routes={pattern: "1/minute"})
        with pytest.raises(TypeError, match="pattern"):
            RateLimiter(exempt=[pattern])

    def test_bad_collections(self):
        with pytest.raises(TypeError, match="routes must be a mapping"):
            RateLimiter(routes=[("/a", "1/minute")])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="exempt must be"):
            RateLimiter(exempt=42)  # type: ignore[arg-type]

    def test_a_bad_strategy(self):
        with pytest.raises(ValueError, match=r"strategy must be one of fixed-window.*'leaky'"):
            RateLimiter(strategy="leaky")

    @pytest.mark.parametrize(
        ("options", "error", "match"),
        [
            ({"on_store_error": "ignore"}, ValueError, "on_store_error must be one of"),
            ({"storage": "ftp://x"}, ValueError, "ftp"),
            ({"storage": 42}, TypeError, "storage"),
            ({"ipv6_prefix": 129}, ValueError, "ipv6_prefix"),
            ({"ipv6_prefix": "64"}, TypeError, "ipv6_prefix"),
            ({"cost": -1}, ValueError, "cost"),
            ({"cost": 1.5}, TypeError, "cost"),
            ({"headers": "yes"}, TypeError, "headers"),
            ({"key": "ip"}, TypeError, "key"),
            ({"trusted_proxies": ["not-a-network"]}, ValueError, "trusted_proxies"),
            ({"name": ""}, TypeError, "name"),
        ],
    )
    def test_bad_options(self, options, error, match):
        with pytest.raises(error, match=match):
            RateLimiter(**options)

    def test_a_limiter_or_options_not_both(self):
        limiter = RateLimiter(default_limits="1/minute")
        with pytest.raises(TypeError, match="not both"):
            RateLimitMiddleware(plain_app, limiter=limiter, default_limits="2/minute")
        with pytest.raises(TypeError, match="limiter must be a RateLimiter"):
            RateLimitMiddleware(plain_app, limiter="1/minute")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="unexpected keyword argument 'rutes'"):
            RateLimitMiddleware(plain_app, rutes={"/": "1/minute"})


class TestRedis:
    @pytest.fixture
    async def store(self, redis_url: str, redis_prefix: str) -> AsyncIterator[Any]:
        from buttress.storage.redis import RedisStorage  # noqa: PLC0415 - needs the redis extra

        store = RedisStorage.from_url(redis_url, prefix=f"{redis_prefix}-{uuid.uuid4().hex[:8]}")
        yield store
        await store.aclose()

    async def test_limits_shared_by_two_processes_one_round_trip_each(self, store, monkeypatch):
        options: dict[str, Any] = {"routes": {"/a": "2/minute"}, "application_limits": "3/minute"}
        first = RateLimitMiddleware(plain_app, storage=store, **options)
        second = RateLimitMiddleware(plain_app, storage=store, **options)
        trips: list[int] = []
        decide = store.adecide

        async def counted(*args: Any, **kwargs: Any) -> Any:
            trips.append(1)
            return await decide(*args, **kwargs)

        monkeypatch.setattr(store, "adecide", counted)
        assert await statuses(first, ["/a"]) == [200]
        assert await statuses(second, ["/a", "/a"]) == [200, 429]  # the route's 2
        assert await statuses(first, ["/b", "/b"]) == [200, 429]  # the application's 3
        assert len(trips) == 5
        async with client(second) as http:
            rejected = await http.get("/b", headers=JSON)
        assert rejected.status_code == 429
        assert 55 <= int(rejected.headers["Retry-After"]) <= 60
        assert rejected.json()["limit"] == "3 per 1 minute"

    @pytest.mark.parametrize("strategy", ["sliding-window", "gcra"])
    async def test_other_strategies(self, store, strategy):
        app = RateLimitMiddleware(
            plain_app, storage=store, strategy=strategy, default_limits="2/minute"
        )
        assert await statuses(app, ["/"] * 3) == [200, 200, 429]


# -- faults -------------------------------------------------------------------------------------

TIMEOUT = 0.2  # the store's timeout for connecting and each command
REQUEST_BOUND = 1.0  # the most wall time one request may take, whatever the store does
LEAKS = ("redis", "127.0.0.1", "storage", "exception", "traceback", "connection", "timeout")


@pytest.fixture
async def fault_store(server: PrivateRedis) -> AsyncIterator[Any]:
    from buttress.storage.redis import RedisStorage  # noqa: PLC0415 - needs the redis extra

    store = RedisStorage.from_url(server.url, prefix="faults", timeout=TIMEOUT)
    yield store
    await store.aclose()


async def timed_requests(
    app: Any, count: int, **request: Any
) -> list[tuple[httpx.Response, float]]:
    results = []
    async with client(app) as http:
        for _ in range(count):
            began = time.monotonic()
            response = await http.get("/", **request)
            results.append((response, time.monotonic() - began))
    return results


def assert_nothing_leaks(response: httpx.Response, server: PrivateRedis) -> None:
    text = response.text.lower()
    assert not [word for word in LEAKS if word in text]
    assert str(server.port) not in text
    assert not [value for value in response.headers.values() if "redis" in value.lower()]


class TestFaults:
    @pytest.mark.parametrize(
        ("policy", "expected"),
        [
            ("fail-open", [200, 200, 200, 200]),
            ("fail-closed", [429, 429, 429, 429]),
            ("local", [200, 200, 429, 429]),
        ],
    )
    async def test_a_stopped_store_answers_by_the_policy(
        self, server, fault_store, policy, expected
    ):
        app = RateLimitMiddleware(
            plain_app, storage=fault_store, on_store_error=policy, default_limits="2/minute"
        )
        assert await statuses(app, ["/"]) == [200]  # the store works
        server.stop()
        results = await timed_requests(app, 4, headers=JSON)
        assert [response.status_code for response, _ in results] == expected
        assert max(elapsed for _, elapsed in results) < REQUEST_BOUND
        for response, _ in results:
            assert_nothing_leaks(response, server)
            if response.status_code == 429:
                assert set(response.json()) == {"error", "message", "limit", "retry_after"}
                assert int(response.headers["Retry-After"]) >= 1

    async def test_a_frozen_store_never_blocks_the_event_loop(self, server, fault_store):
        app = RateLimitMiddleware(
            plain_app, storage=fault_store, on_store_error="fail-open", default_limits="2/minute"
        )
        assert await statuses(app, ["/"]) == [200]
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        try:
            await asyncio.sleep(0.05)
            server.freeze()
            began = time.monotonic()
            results = await timed_requests(app, 5)
            elapsed = time.monotonic() - began
        finally:
            task.cancel()
            server.thaw()
        assert [response.status_code for response, _ in results] == [200] * 5
        assert max(took for _, took in results) < REQUEST_BOUND
        during = [tick for tick in ticks if began <= tick <= began + elapsed]
        assert elapsed > TIMEOUT  # the store was waited for (then left alone for a while)
        assert len(during) >= elapsed / 0.01 / 4
        gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
        assert max(gaps) < 0.15

    async def test_a_frozen_store_fails_closed_without_leaking(self, server, fault_store):
        app = RateLimitMiddleware(
            plain_app, storage=fault_store, on_store_error="fail-closed", default_limits="2/minute"
        )
        server.freeze()
        try:
            results = await timed_requests(app, 2)
        finally:
            server.thaw()
        for response, took in results:
            assert response.status_code == 429
            assert took < REQUEST_BOUND
            assert_nothing_leaks(response, server)
