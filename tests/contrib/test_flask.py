"""The Flask extension, through Flask's test client: the chapter's app, every declaration, keys
behind proxies, headers and bodies, configuration, Redis, and a Redis that dies mid-test.

Most apps count on a memory store with a fake clock, so that windows end when a test says so.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Blueprint, Flask, request

from buttress import ConfigurationError
from buttress.contrib.flask import (
    Limiter,
    RateLimitExceeded,
    get_remote_address,
    remote_address,
)
from buttress.ratelimit import ALGORITHMS, Rate, RateLimitDecided, StoreDegraded
from buttress.storage import MemoryStorage
from buttress.testing import FakeClock

from .._redis_server import PrivateRedis

ADDRESS = "203.0.113.7"
OTHER = "198.51.100.20"
PROXY = "10.0.0.1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryStorage:
    return MemoryStorage(clock=clock)


def new_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, **config)
    return app


def get(app: Flask, path: str, address: str = ADDRESS, **options: Any) -> Any:
    return app.test_client().get(path, environ_base={"REMOTE_ADDR": address}, **options)


def post(app: Flask, path: str, address: str = ADDRESS, **options: Any) -> Any:
    return app.test_client().post(path, environ_base={"REMOTE_ADDR": address}, **options)


def statuses(
    app: Flask, path: str, count: int, address: str = ADDRESS, **options: Any
) -> list[int]:
    codes: list[int] = []
    for _ in range(count):
        with get(app, path, address, **options) as response:  # closes a file a response sends
            codes.append(response.status_code)
    return codes


def chapter_app(**storage: Any) -> tuple[Flask, Limiter]:
    """The chapter's app, as written for Flask-Limiter, with the buttress import."""
    app = new_app()
    options = storage or {"storage_uri": "memory://"}
    limiter = Limiter(
        get_remote_address,
        app=app,
        default_limits=["100 per day", "10 per hour"],
        strategy="fixed-window",
        **options,
    )

    @app.route("/limited")
    def limited() -> str:
        return "limited"

    @app.route("/more_limited")
    @limiter.limit("2/minute")
    def more_limited() -> str:
        return "more limited"

    return app, limiter


def engine_of(app: Flask, limiter: Limiter) -> Any:
    """The engine a limiter decides with for ``app``."""
    state = app.extensions["buttress.flask"].get(limiter)
    assert state is not None
    return state.engine


def routes(app: Flask, *names: str) -> None:
    """Plain views named after their paths: /a, /b..."""
    for name in names:
        app.add_url_rule(f"/{name}", name, lambda name=name: name, methods=["GET", "POST"])


class TestChapterApp:
    def test_ten_an_hour_then_429(self):
        app, _ = chapter_app()
        assert statuses(app, "/limited", 11) == [200] * 10 + [429]

    def test_two_a_minute_then_429(self):
        app, _ = chapter_app()
        assert statuses(app, "/more_limited", 3) == [200, 200, 429]

    def test_a_decorated_route_does_not_get_the_defaults(self):
        app, _ = chapter_app()
        statuses(app, "/more_limited", 3)
        assert statuses(app, "/limited", 11) == [200] * 10 + [429]
        response = get(app, "/more_limited")
        assert response.headers["RateLimit-Policy"] == "2;w=60"

    def test_limits_are_per_client(self):
        app, _ = chapter_app()
        statuses(app, "/limited", 11)
        assert statuses(app, "/limited", 1, OTHER) == [200]

    def test_windows_end_and_the_day_limit_binds(self, clock, store):
        app, _ = chapter_app(storage=store)
        for hour in range(10):
            assert statuses(app, "/limited", 11) == [200] * 10 + [429], hour
            clock.advance(3600)
        # 100 requests today: the hourly window is fresh, the daily one is not.
        response = get(app, "/limited")
        assert response.status_code == 429
        assert response.headers["RateLimit-Limit"] == "100"
        assert response.headers["Retry-After"] == str(86400 - 36000)
        clock.advance(86400 - 36000)
        assert get(app, "/limited").status_code == 200


class TestHeaders:
    def test_values_on_admission_and_rejection(self, clock, store):
        app, _ = chapter_app(storage=store)
        first = get(app, "/limited")
        assert first.headers["RateLimit-Limit"] == "10"
        assert first.headers["RateLimit-Remaining"] == "9"
        assert first.headers["RateLimit-Reset"] == "3600"
        assert first.headers["RateLimit-Policy"] == "100;w=86400, 10;w=3600"
        assert "Retry-After" not in first.headers
        clock.advance(100)
        statuses(app, "/limited", 9)
        rejected = get(app, "/limited")
        assert rejected.status_code == 429
        assert rejected.headers["RateLimit-Remaining"] == "0"
        assert rejected.headers["RateLimit-Reset"] == "3500"
        assert rejected.headers["Retry-After"] == "3500"

    def test_headers_can_be_turned_off_but_retry_after_stays(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, headers_enabled=False)
        app.add_url_rule("/a", "a", limiter.limit("1/minute")(lambda: "a"))
        admitted, rejected = get(app, "/a"), get(app, "/a")
        assert not [name for name, _ in admitted.headers if "ratelimit" in name.lower()]
        assert rejected.status_code == 429
        assert rejected.headers["Retry-After"] == "60"
        assert not [name for name, _ in rejected.headers if "ratelimit" in name.lower()]

    def test_legacy_names(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, legacy_headers=True)
        app.add_url_rule("/a", "a", limiter.limit("1/minute")(lambda: "a"))
        before = time.time()
        admitted, rejected = get(app, "/a"), get(app, "/a")
        assert admitted.headers["X-RateLimit-Limit"] == "1"
        assert admitted.headers["X-RateLimit-Remaining"] == "0"
        assert before + 59 <= int(admitted.headers["X-RateLimit-Reset"]) <= time.time() + 61
        assert "RateLimit-Limit" not in admitted.headers
        assert rejected.headers["Retry-After"] == "60"

    def test_unlimited_responses_have_none(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store)
        routes(app, "free")
        app.add_url_rule("/exempt", "exempt", limiter.exempt(lambda: "x"))
        for path in ("/free", "/exempt"):
            response = get(app, path)
            assert response.status_code == 200
            assert "RateLimit-Limit" not in response.headers

    def test_the_binding_limit_is_the_closest_to_rejecting(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, application_limits="5/hour")
        app.add_url_rule("/a", "a", limiter.limit("100/minute")(lambda: "a"))
        response = get(app, "/a")
        assert response.headers["RateLimit-Limit"] == "5"
        assert response.headers["RateLimit-Remaining"] == "4"
        assert response.headers["RateLimit-Policy"] == "5;w=3600, 100;w=60"

    def test_a_streamed_response_has_them(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store)

        @app.route("/stream")
        @limiter.limit("3/minute")
        def stream() -> Any:
            return app.response_class((part for part in ("a", "b")), mimetype="text/plain")

        response = get(app, "/stream")
        assert response.get_data(as_text=True) == "ab"
        assert response.headers["RateLimit-Remaining"] == "2"

    def test_middleware_added_after_the_limiter_keeps_them(self, store):
        from werkzeug.middleware.proxy_fix import ProxyFix  # noqa: PLC0415

        app = new_app()
        Limiter(get_remote_address, app=app, storage=store, default_limits="2/minute")
        routes(app, "a")
        app.wsgi_app = ProxyFix(app.wsgi_app)  # type: ignore[method-assign]
        spoofed = {"X-Forwarded-For": OTHER}  # ProxyFix trusts it: the key is OTHER's
        assert statuses(app, "/a", 3, headers=spoofed) == [200, 200, 429]
        response = get(app, "/a", headers={"X-Forwarded-For": "203.0.113.9"})
        assert response.status_code == 200
        assert response.headers["RateLimit-Remaining"] == "1"
        assert [name for name, _ in response.headers].count("RateLimit-Limit") == 1

    def test_two_limiters_on_one_app_each_send_theirs_once(self, store):
        app = new_app()
        Limiter(get_remote_address, app=app, storage=store, default_limits="5/minute")
        Limiter(get_remote_address, app=app, storage=store, default_limits="3/minute")
        routes(app, "a")
        response = get(app, "/a")
        names = [name for name, _ in response.headers]
        assert names.count("RateLimit-Limit") == 1
        assert response.headers["RateLimit-Limit"] in ("5", "3")
        assert statuses(app, "/a", 3) == [200, 200, 429]


class TestRejection:
    def make(self, store: MemoryStorage, **limit: Any) -> tuple[Flask, list[str]]:
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store)
        ran: list[str] = []

        @app.route("/a")
        @limiter.limit("1/minute", **limit)
        def a() -> str:
            ran.append("a")
            return "a"

        return app, ran

    def test_json_for_json_clients(self, store):
        app, _ = self.make(store)
        get(app, "/a")
        response = get(app, "/a", headers={"Accept": "application/json"})
        assert response.status_code == 429
        assert response.mimetype == "application/json"
        assert response.get_json() == {
            "error": "too_many_requests",
            "message": "Too Many Requests: 1 per 1 minute",
            "limit": "1 per 1 minute",
            "retry_after": 60,
        }

    def test_text_for_everyone_else(self, store):
        app, _ = self.make(store)
        get(app, "/a")
        browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        for accept in (browser, None):
            headers = {"Accept": accept} if accept else {}
            response = get(app, "/a", headers=headers)
            assert response.status_code == 429
            assert response.mimetype == "text/plain"
            assert response.get_data(as_text=True) == (
                "Too Many Requests: 1 per 1 minute. Retry after 60 s.\n"
            )

    def test_error_message(self, store):
        app, _ = self.make(store, error_message="Slow down, please")
        get(app, "/a")
        response = get(app, "/a", headers={"Accept": "application/json"})
        assert response.get_json()["message"] == "Slow down, please"
        assert get(app, "/a").get_data(as_text=True).startswith("Slow down, please. Retry")

    def test_a_rejected_request_never_reaches_the_view(self, store):
        app, ran = self.make(store)
        statuses(app, "/a", 3)
        assert ran == ["a"]

    @pytest.mark.parametrize("handled", [429, RateLimitExceeded])
    def test_a_custom_error_handler(self, store, handled):
        app, _ = self.make(store)
        seen: list[RateLimitExceeded] = []

        @app.errorhandler(handled)
        def too_many(error: RateLimitExceeded) -> tuple[str, int]:
            seen.append(error)
            return f"custom: {error.limit}, wait {error.retry_after} s", 429

        get(app, "/a")
        response = get(app, "/a")
        assert response.status_code == 429
        assert response.get_data(as_text=True) == "custom: 1 per 1 minute, wait 60 s"
        assert response.headers["Retry-After"] == "60"
        assert response.headers["RateLimit-Limit"] == "1"
        [error] = seen
        assert isinstance(error, RateLimitExceeded)
        assert error.code == 429
        assert error.decision.rate == Rate(1, 60, scope="route/a")
        assert error.description == "Too Many Requests: 1 per 1 minute"


class TestDeductWhen:
    """``deduct_when``: checked before the view, counted after it only when the response says."""

    def login_app(self, store: Any, **limits: Any) -> Flask:
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, **limits)

        @app.route("/login", methods=["POST"])
        @limiter.limit("2/minute", deduct_when=lambda response: response.status_code == 401)
        def login() -> Any:
            return ("welcome", 200) if request.form.get("password") == "right" else ("no", 401)

        return app

    def test_only_failed_logins_count(self, store):
        app = self.login_app(store)
        good: dict[str, Any] = {"data": {"password": "right"}}
        bad: dict[str, Any] = {"data": {"password": "wrong"}}
        assert [post(app, "/login", **good).status_code for _ in range(5)] == [200] * 5
        assert post(app, "/login", **bad).status_code == 401
        assert post(app, "/login", **good).status_code == 200
        assert post(app, "/login", **bad).status_code == 401
        rejected = post(app, "/login", **good)  # two failures: the limit is reached
        assert rejected.status_code == 429
        assert rejected.headers["Retry-After"] == "60"
        assert post(app, "/login", address=OTHER, **good).status_code == 200

    def test_the_check_counts_nothing_and_headers_show_the_state_before(self, store):
        app = self.login_app(store)
        first = post(app, "/login", data={"password": "wrong"})
        assert first.status_code == 401
        assert first.headers["RateLimit-Remaining"] == "1"  # the check: 2 - 1 would be left
        second = post(app, "/login", data={"password": "right"})
        assert second.headers["RateLimit-Remaining"] == "0"  # after the first failure

    def test_with_counted_limits_all_or_nothing_still_holds(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, application_limits="3/hour")
        failing = {"fail": True}

        @app.route("/a")
        @limiter.limit("1/hour", deduct_when=lambda response: response.status_code >= 500)
        def a() -> Any:
            return ("broken", 500) if failing["fail"] else ("ok", 200)

        assert get(app, "/a").status_code == 500  # counted by both
        assert get(app, "/a").status_code == 429  # the route's deducted limit rejects first...
        failing["fail"] = False
        assert statuses(app, "/b", 1) == [404]
        engine = engine_of(app, limiter)
        global_rate = Rate(3, 3600, scope="global")
        # ...and the rejected request did not count against the application limit.
        remaining = engine.limiter((global_rate,)).peek(ADDRESS).remaining
        assert remaining == 3 - 1 - 1  # the 500 and this peek's request

    def test_default_limits_deduct_when(self, store):
        app = new_app()
        Limiter(
            get_remote_address,
            app=app,
            storage=store,
            default_limits="1/hour",
            default_limits_deduct_when=lambda response: response.status_code == 404,
        )

        @app.route("/item/<name>")
        def item(name: str) -> Any:
            return ("found", 200) if name == "known" else ("missing", 404)

        assert statuses(app, "/item/known", 3) == [200] * 3
        assert get(app, "/item/other").status_code == 404
        assert get(app, "/item/known").status_code == 429

    def test_a_deduct_when_that_raises_is_the_apps_error(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store)

        def broken(response: Any) -> bool:
            raise RuntimeError("predicate failed")

        app.add_url_rule("/a", "a", limiter.limit("1/hour", deduct_when=broken)(lambda: "a"))
        with pytest.raises(RuntimeError, match="predicate failed"):
            get(app, "/a")


class TestOnBreach:
    def test_a_limits_on_breach_answers_instead_of_the_429(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store)
        seen: list[RateLimitExceeded] = []

        def gentle(error: RateLimitExceeded) -> Any:
            seen.append(error)
            return {"queued": True, "retry_after": error.retry_after}, 202

        app.add_url_rule("/a", "a", limiter.limit("1/minute", on_breach=gentle)(lambda: "a"))
        assert get(app, "/a").status_code == 200
        answer = get(app, "/a")
        assert answer.status_code == 202
        assert answer.get_json() == {"queued": True, "retry_after": 60}
        assert answer.headers["Retry-After"] == "60"  # the decision's headers stay
        assert answer.headers["RateLimit-Remaining"] == "0"
        [error] = seen
        assert error.decision.rate == Rate(1, 60, scope="route/a")

    def test_the_limiters_on_breach_and_none_means_the_429(self, store):
        app = new_app()
        calls: list[int] = []

        def count_only(error: RateLimitExceeded) -> None:
            calls.append(error.retry_after)

        Limiter(
            get_remote_address,
            app=app,
            storage=store,
            default_limits="1/minute",
            on_breach=count_only,
        )
        routes(app, "a")
        assert statuses(app, "/a", 3) == [200, 429, 429]
        assert calls == [60, 60]

    def test_the_limits_own_wins_over_the_limiters(self, store):
        app = new_app()
        limiter = Limiter(
            get_remote_address,
            app=app,
            storage=store,
            on_breach=lambda error: ("limiter's", 503),
            application_limits="2/minute",
        )
        app.add_url_rule(
            "/a", "a", limiter.limit("1/minute", on_breach=lambda e: ("route's", 429))(lambda: "")
        )
        routes(app, "b")
        assert get(app, "/a").status_code == 200
        assert get(app, "/a").get_data(as_text=True) == "route's"  # the route's 1/minute
        assert get(app, "/b").status_code == 200  # the application's second
        assert get(app, "/b").get_data(as_text=True) == "limiter's"  # its third


class TestHeaderNameMapping:
    def test_headers_are_renamed_and_replace_the_views(self, store):
        app = new_app()
        limiter = Limiter(
            get_remote_address,
            app=app,
            storage=store,
            header_name_mapping={"ratelimit-remaining": "X-Quota-Left", "Retry-After": "X-Wait"},
        )
        app.add_url_rule(
            "/a", "a", limiter.limit("1/minute")(lambda: ("a", {"X-Quota-Left": "99"}))
        )
        admitted, rejected = get(app, "/a"), get(app, "/a")
        assert admitted.headers.get_all("X-Quota-Left") == ["0"]
        assert "RateLimit-Remaining" not in admitted.headers
        assert admitted.headers["RateLimit-Limit"] == "1"
        assert rejected.headers["X-Wait"] == "60"
        assert "Retry-After" not in rejected.headers

    @pytest.mark.parametrize(
        ("mapping", "error", "match"),
        [
            ({"X-Unknown": "A"}, ValueError, "'X-Unknown' is not a header buttress sends"),
            ({"RateLimit-Limit": "bad name"}, ValueError, "'bad name' is not a valid header"),
            ({"RateLimit-Limit": ""}, ValueError, "not a valid header"),
            ([("RateLimit-Limit", "A")], TypeError, "header_name_mapping must be a mapping"),
        ],
    )
    def test_bad_mappings_are_refused_naming_the_argument(self, mapping, error, match):
        with pytest.raises(error, match=match):
            Limiter(get_remote_address, header_name_mapping=mapping)

    def test_bad_callables_are_refused(self):
        limiter = Limiter(get_remote_address)
        with pytest.raises(TypeError, match="deduct_when must be callable"):
            limiter.limit("1/minute", deduct_when=True)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="on_breach must be callable"):
            limiter.shared_limit("1/minute", "s", on_breach="x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="on_breach must be callable"):
            Limiter(get_remote_address, on_breach=1)  # type: ignore[arg-type]


class TestDeclarations:
    def test_exempt_routes_are_never_limited(self, store):
        app = new_app()
        limiter = Limiter(
            get_remote_address,
            app=app,
            storage=store,
            default_limits="1/hour",
            application_limits="2/hour",
        )
        app.add_url_rule("/health", "health", limiter.exempt(lambda: "ok"))
        routes(app, "a")
        assert statuses(app, "/health", 5) == [200] * 5
        assert statuses(app, "/a", 2) == [200, 429]
        assert statuses(app, "/health", 2) == [200] * 2

    def test_exempt_blueprint(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, default_limits="1/hour")
        internal = Blueprint("internal", __name__)
        internal.add_url_rule("/metrics", "metrics", lambda: "m")
        limiter.exempt(internal)
        app.register_blueprint(internal, url_prefix="/internal")
        assert statuses(app, "/internal/metrics", 3) == [200] * 3

    def test_default_limits_are_per_route(self, store):
        app = new_app()
        Limiter(get_remote_address, app=app, storage=store, default_limits="2/hour")
        routes(app, "a", "b")
        assert statuses(app, "/a", 3) == [200, 200, 429]
        assert statuses(app, "/b", 3) == [200, 200, 429]

    def test_shared_limit_across_routes(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, default_limits="100/hour")
        search = limiter.shared_limit("3/minute", scope="search")
        app.add_url_rule("/a", "a", search(lambda: "a"))
        app.add_url_rule("/b", "b", search(lambda: "b"))
        # Another declaration with the same scope is the same group.
        app.add_url_rule("/c", "c", limiter.shared_limit("3/minute", "search")(lambda: "c"))
        routes(app, "other")
        assert [get(app, path).status_code for path in ("/a", "/b", "/a")] == [200] * 3
        assert get(app, "/b").status_code == 429
        assert get(app, "/c").status_code == 429
        assert get(app, "/b", OTHER).status_code == 200
        assert get(app, "/other").status_code == 200

    def test_per_method(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store)
        view = limiter.limit("1/minute", per_method=True)(lambda: "x")
        app.add_url_rule("/x", "x", view, methods=["GET", "POST"])
        assert get(app, "/x").status_code == 200
        assert post(app, "/x").status_code == 200
        assert get(app, "/x").status_code == 429
        assert post(app, "/x").status_code == 429

    def test_without_per_method_methods_count_together(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store)
        app.add_url_rule("/x", "x", limiter.limit("1/minute")(lambda: "x"), methods=["GET", "POST"])
        assert get(app, "/x").status_code == 200
        assert post(app, "/x").status_code == 429

    def test_methods_filter(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, default_limits="3/minute")
        view = limiter.limit("1/minute", methods=["post"])(lambda: "x")
        app.add_url_rule("/x", "x", view, methods=["GET", "POST"])
        assert post(app, "/x").status_code == 200
        assert post(app, "/x").status_code == 429
        # A GET is not limited by it: the defaults apply instead, as in Flask-Limiter.
        response = get(app, "/x")
        assert response.headers["RateLimit-Limit"] == "3"
        assert statuses(app, "/x", 3) == [200, 200, 429]

    def test_override_defaults_false_keeps_them(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, default_limits="2/minute")
        app.add_url_rule("/x", "x", limiter.limit("5/hour", override_defaults=False)(lambda: "x"))
        assert statuses(app, "/x", 3) == [200, 200, 429]
        assert get(app, "/x").headers["RateLimit-Policy"] == "5;w=3600, 2;w=60"

    def test_cost_int(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store)
        app.add_url_rule("/x", "x", limiter.limit("5/minute", cost=2)(lambda: "x"))
        responses = [get(app, "/x") for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 429]
        assert [r.headers["RateLimit-Remaining"] for r in responses] == ["3", "1", "1"]

    def test_cost_callable(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store)

        def size() -> int:
            return int(request.args.get("n", "1"))

        app.add_url_rule("/x", "x", limiter.limit("10/minute", cost=size)(lambda: "x"))
        assert get(app, "/x?n=7").headers["RateLimit-Remaining"] == "3"
        assert get(app, "/x?n=4").status_code == 429
        assert get(app, "/x?n=3").status_code == 200
        # Cost 0: not counted at all.
        response = get(app, "/x?n=0")
        assert response.status_code == 200
        assert "RateLimit-Limit" not in response.headers

    def test_dynamic_limits_by_plan(self, store):
        app = new_app()
        limiter = Limiter(lambda: request.headers["X-User"], app=app, storage=store)
        plans = {"ann": "free", "bob": "pro"}

        def plan_limit() -> str:
            return "5/minute" if plans[request.headers["X-User"]] == "pro" else "2/minute"

        app.add_url_rule("/x", "x", limiter.limit(plan_limit)(lambda: "x"))
        assert statuses(app, "/x", 3, headers={"X-User": "ann"}) == [200, 200, 429]
        assert statuses(app, "/x", 6, headers={"X-User": "bob"}) == [200] * 5 + [429]
        plans["ann"] = "pro"  # an upgrade takes effect at once: a new limit, a fresh count
        assert statuses(app, "/x", 1, headers={"X-User": "ann"}) == [200]

    def test_key_func_per_decorator(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, default_limits="10/minute")
        by_user = limiter.limit("2/minute", key_func=lambda: request.headers["X-User"])
        app.add_url_rule("/x", "x", by_user(lambda: "x"))
        routes(app, "y")
        headers = {"X-User": "ann"}
        assert get(app, "/x", ADDRESS, headers=headers).status_code == 200
        assert get(app, "/x", OTHER, headers=headers).status_code == 200
        assert get(app, "/x", "192.0.2.99", headers=headers).status_code == 429
        assert get(app, "/x", ADDRESS, headers={"X-User": "bob"}).status_code == 200
        assert get(app, "/y").headers["RateLimit-Remaining"] == "9"  # the limiter's key

    def test_views_registered_before_or_after_init_app(self, store):
        limiter = Limiter(get_remote_address, storage=store)
        app = new_app()

        @app.route("/before")
        @limiter.limit("1/minute")
        def before() -> str:
            return "before"

        limiter.init_app(app)

        @limiter.limit("1/minute")  # above @app.route works too
        @app.route("/after")
        def after() -> str:
            return "after"

        assert statuses(app, "/before", 2) == [200, 429]
        assert statuses(app, "/after", 2) == [200, 429]

    def test_views_behind_other_decorators(self, store):
        import functools  # noqa: PLC0415

        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store)

        def logged(view: Any) -> Any:
            @functools.wraps(view)
            def wrapper() -> Any:
                return view()

            return wrapper

        @app.route("/x")
        @logged
        @limiter.limit("1/minute")
        def x() -> str:
            return "x"

        assert statuses(app, "/x", 2) == [200, 429]

    def test_blueprint_views(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, default_limits="3/minute")
        api = Blueprint("api", __name__)

        @api.route("/strict")
        @limiter.limit("1/minute")
        def strict() -> str:
            return "strict"

        @api.route("/plain")
        def plain() -> str:
            return "plain"

        app.register_blueprint(api, url_prefix="/api")
        assert statuses(app, "/api/strict", 2) == [200, 429]
        assert statuses(app, "/api/plain", 4) == [200, 200, 200, 429]

    def test_blueprint_limits(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, default_limits="9/minute")
        api = Blueprint("api", __name__)
        api.add_url_rule("/a", "a", lambda: "a")
        api.add_url_rule("/b", "b", lambda: "b")
        api.add_url_rule("/own", "own", limiter.limit("1/minute")(lambda: "own"))
        limiter.limit("2/minute")(api)
        app.register_blueprint(api, url_prefix="/api")
        routes(app, "outside")
        # The blueprint's limit replaces the defaults, per route.
        assert statuses(app, "/api/a", 3) == [200, 200, 429]
        assert statuses(app, "/api/b", 3) == [200, 200, 429]
        # A route's own limit replaces its blueprint's.
        assert statuses(app, "/api/own", 2) == [200, 429]
        assert get(app, "/outside").headers["RateLimit-Limit"] == "9"

    def test_request_filter(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, default_limits="1/minute")
        routes(app, "a")

        @limiter.request_filter
        def from_the_office() -> bool:
            return request.remote_addr == OTHER

        assert statuses(app, "/a", 3, OTHER) == [200] * 3
        assert statuses(app, "/a", 2) == [200, 429]

    def test_exempt_when(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store)
        view = limiter.limit("1/minute", exempt_when=lambda: "X-Admin" in request.headers)
        app.add_url_rule("/x", "x", view(lambda: "x"))
        assert statuses(app, "/x", 3, headers={"X-Admin": "1"}) == [200] * 3
        assert statuses(app, "/x", 2) == [200, 429]

    def test_current_decision_in_the_view(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store)

        @app.route("/x")
        @limiter.limit("5/minute")
        def x() -> str:
            decision = limiter.current_decision
            assert decision is not None
            return f"{decision.remaining} left"

        @app.route("/free")
        def free() -> str:
            return str(limiter.current_decision)

        assert get(app, "/x").get_data(as_text=True) == "4 left"
        assert get(app, "/free").get_data(as_text=True) == "None"

    def test_not_found_and_static_are_not_counted(self, store, tmp_path):
        (tmp_path / "logo.txt").write_text("logo")
        app = Flask(__name__, static_folder=str(tmp_path), static_url_path="/static")
        app.testing = True
        Limiter(
            get_remote_address,
            app=app,
            storage=store,
            default_limits="1/minute",
            application_limits="1/minute",
        )
        assert statuses(app, "/nowhere", 3) == [404] * 3
        assert statuses(app, "/static/logo.txt", 3) == [200] * 3


class TestApplicationLimits:
    def test_global_across_routes(self, store):
        app = new_app()
        Limiter(get_remote_address, app=app, storage=store, application_limits=["5/minute"])
        routes(app, "a", "b")
        assert [get(app, p).status_code for p in ("/a", "/b", "/a", "/b", "/a")] == [200] * 5
        assert get(app, "/b").status_code == 429
        assert get(app, "/a").status_code == 429
        assert get(app, "/a", OTHER).status_code == 200

    def test_a_request_the_application_rejects_consumes_nothing_of_the_route(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, application_limits="3/minute")
        app.add_url_rule("/a", "a", limiter.limit("5/minute")(lambda: "a"))
        routes(app, "b")
        assert statuses(app, "/b", 3) == [200] * 3
        response = get(app, "/a")
        assert response.status_code == 429
        assert response.headers["RateLimit-Limit"] == "3"  # the application limit rejected it
        route = Rate(5, 60, scope="route/a")
        untouched = store.decide("fixed-window", ADDRESS, (route,), 1, consume=False)
        assert untouched.remaining == 4  # after this request: none taken so far
        application = Rate(3, 60, scope="global")
        assert (
            store.decide("fixed-window", ADDRESS, (application,), 1, consume=False).remaining == 0
        )

    def test_a_request_the_route_rejects_consumes_nothing_of_the_application(self, store):
        app = new_app()
        limiter = Limiter(
            get_remote_address, app=app, storage=store, application_limits="10/minute"
        )
        app.add_url_rule("/a", "a", limiter.limit("2/minute")(lambda: "a"))
        routes(app, "b")
        assert statuses(app, "/a", 5) == [200, 200, 429, 429, 429]
        assert statuses(app, "/b", 9) == [200] * 8 + [429]

    def test_decided_in_one_operation(self, store):
        decided: list[RateLimitDecided] = []
        app = new_app()
        limiter = Limiter(
            get_remote_address,
            app=app,
            storage=store,
            application_limits="100/hour",
            default_limits=["50/hour", "10/minute"],
            listeners=[lambda e: decided.append(e) if isinstance(e, RateLimitDecided) else None],
        )
        app.add_url_rule("/a", "a", limiter.shared_limit("20/hour", "group")(lambda: "a"))
        app.add_url_rule("/b", "b", limiter.limit("30/hour", override_defaults=False)(lambda: "b"))
        get(app, "/a")
        get(app, "/b")
        assert len(decided) == 2  # one decision per request, every limit in it
        assert decided[0].key == ADDRESS
        engine = engine_of(app, limiter)
        rates = [set(limiter.rates) for limiter in engine._limiters.values()]
        assert rates == [
            {Rate(100, 3600, scope="global"), Rate(20, 3600, scope="shared/group")},
            {
                Rate(100, 3600, scope="global"),
                Rate(30, 3600, scope="route/b"),
                Rate(50, 3600, scope="route/b"),
                Rate(10, 60, scope="route/b"),
            },
        ]

    def test_other_keys_are_decided_apart(self, store):
        decided: list[RateLimitDecided] = []
        app = new_app()
        limiter = Limiter(
            get_remote_address,
            app=app,
            storage=store,
            application_limits="3/minute",
            listeners=[lambda e: decided.append(e) if isinstance(e, RateLimitDecided) else None],
        )
        by_user = limiter.limit("10/minute", key_func=lambda: "user-1")
        app.add_url_rule("/a", "a", by_user(lambda: "a"))
        assert statuses(app, "/a", 4) == [200, 200, 200, 429]
        assert [event.key for event in decided[:2]] == [ADDRESS, "user-1"]
        # The group decided first rejected the 4th request: the user's limit was not asked.
        assert [event.key for event in decided[6:]] == [ADDRESS]

    def test_application_limits_per_method(self, store):
        app = new_app()
        Limiter(
            get_remote_address,
            app=app,
            storage=store,
            application_limits="1/minute",
            application_limits_per_method=True,
        )
        routes(app, "a")
        assert get(app, "/a").status_code == 200
        assert post(app, "/a").status_code == 200
        assert post(app, "/a").status_code == 429


class TestConfiguration:
    def test_from_app_config(self, clock):
        app = new_app(
            BUTTRESS_DEFAULT_LIMITS="2/minute",
            BUTTRESS_APPLICATION_LIMITS=["3/minute"],
            BUTTRESS_STRATEGY="gcra",
            BUTTRESS_LEGACY_HEADERS=True,
            BUTTRESS_STORAGE_URI="memory://",
            BUTTRESS_STORAGE_OPTIONS={"sweep_every": 8},
            BUTTRESS_ON_STORE_ERROR="fail-closed",
        )
        limiter = Limiter(get_remote_address, app=app)
        routes(app, "a", "b")
        assert statuses(app, "/a", 3) == [200, 200, 429]  # the default 2/minute of /a
        assert statuses(app, "/b", 2) == [200, 429]  # the application's 3/minute
        assert "X-RateLimit-Limit" in get(app, "/b").headers
        engine = engine_of(app, limiter)
        assert (engine.strategy, engine.on_store_error) == ("gcra", "fail-closed")

    def test_arguments_win_over_config(self):
        app = new_app(
            BUTTRESS_DEFAULT_LIMITS="1/minute",
            BUTTRESS_STRATEGY="nonsense",
            BUTTRESS_HEADERS_ENABLED=False,
        )
        Limiter(
            get_remote_address,
            app=app,
            default_limits="2/minute",
            strategy="token-bucket",
            headers_enabled=True,
        )
        routes(app, "a")
        response = get(app, "/a")
        assert response.headers["RateLimit-Limit"] == "2"

    @pytest.mark.parametrize("value", [False, "false", "0", "off"])
    def test_disabled(self, value):
        app = new_app(BUTTRESS_ENABLED=value, BUTTRESS_DEFAULT_LIMITS="1/minute")
        Limiter(get_remote_address, app=app)
        routes(app, "a")
        assert statuses(app, "/a", 3) == [200] * 3
        assert "RateLimit-Limit" not in get(app, "/a").headers

    def test_headers_disabled_by_config(self):
        app = new_app(BUTTRESS_HEADERS_ENABLED="no", BUTTRESS_DEFAULT_LIMITS="1/minute")
        Limiter(get_remote_address, app=app)
        routes(app, "a")
        assert "RateLimit-Limit" not in get(app, "/a").headers

    def test_trusted_proxies_from_config(self):
        app = new_app(BUTTRESS_TRUSTED_PROXIES="10.0.0.0/8", BUTTRESS_DEFAULT_LIMITS="1/minute")
        Limiter(app=app)
        routes(app, "a")
        through = {"X-Forwarded-For": ADDRESS}
        assert get(app, "/a", PROXY, headers=through).status_code == 200
        assert get(app, "/a", PROXY, headers={"X-Forwarded-For": OTHER}).status_code == 200
        assert get(app, "/a", "10.9.9.9", headers=through).status_code == 429

    def test_trusted_proxies_need_the_default_key_function(self):
        app = new_app(BUTTRESS_TRUSTED_PROXIES="10.0.0.0/8")
        with pytest.raises(ConfigurationError, match="BUTTRESS_TRUSTED_PROXIES"):
            Limiter(get_remote_address, app=app)
        with pytest.raises(TypeError, match="trusted_proxies applies to the default key"):
            Limiter(get_remote_address, trusted_proxies="10.0.0.0/8")

    @pytest.mark.parametrize(
        ("key", "value", "named"),
        [
            ("BUTTRESS_STRATEGY", "leaky-bucket", "leaky-bucket"),
            ("BUTTRESS_ON_STORE_ERROR", "ignore", "ignore"),
            ("BUTTRESS_DEFAULT_LIMITS", "10 per fortnight", "10 per fortnight"),
            ("BUTTRESS_ENABLED", "maybe", "BUTTRESS_ENABLED"),
            ("BUTTRESS_STORAGE_URI", "mongodb://localhost", "mongodb"),
        ],
    )
    def test_bad_config_fails_at_init_app_naming_it(self, key, value, named):
        app = new_app(**{key: value})
        with pytest.raises(ConfigurationError, match=named):
            Limiter(get_remote_address, app=app)

    def test_factory_pattern(self):
        limiter = Limiter(get_remote_address, default_limits=["2/minute"])

        def create_app() -> Flask:
            app = new_app()
            limiter.init_app(app)
            routes(app, "a")
            return app

        first, second = create_app(), create_app()
        assert statuses(first, "/a", 3) == [200, 200, 429]
        assert statuses(second, "/a", 3) == [200, 200, 429]  # each app has its own store

    def test_a_store_object_is_shared_by_the_apps(self, store):
        limiter = Limiter(get_remote_address, storage=store, default_limits=["2/minute"])
        apps = [new_app(), new_app()]
        for app in apps:
            limiter.init_app(app)
            routes(app, "a")
        assert [get(app, "/a").status_code for app in apps * 2] == [200, 200, 429, 429]

    def test_init_app_twice_is_one_set_of_hooks(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, default_limits="2/minute")
        limiter.init_app(app)
        routes(app, "a")
        assert get(app, "/a").headers["RateLimit-Remaining"] == "1"


class TestKeys:
    def key_in(self, key_func: Any, address: str, **headers: str) -> str:
        app = new_app()
        with app.test_request_context(environ_base={"REMOTE_ADDR": address}, headers=headers):
            return str(key_func())

    def test_get_remote_address_is_the_peer_only(self):
        assert self.key_in(get_remote_address, ADDRESS, **{"X-Forwarded-For": OTHER}) == ADDRESS
        app = new_app()
        with app.test_request_context(environ_base={"REMOTE_ADDR": None}):
            assert get_remote_address() == "127.0.0.1"

    def test_remote_address_behind_trusted_proxies(self):
        key = remote_address(trusted_proxies=["10.0.0.0/8"])
        assert self.key_in(key, PROXY, **{"X-Forwarded-For": ADDRESS}) == ADDRESS
        # The right-most address that is not a trusted proxy; what the client wrote is ignored.
        chain = f"6.6.6.6, {ADDRESS}, 10.0.0.2"
        assert self.key_in(key, PROXY, **{"X-Forwarded-For": chain}) == ADDRESS
        assert self.key_in(key, PROXY, Forwarded=f'for="{ADDRESS}:4711"') == ADDRESS
        assert self.key_in(key, PROXY) == PROXY
        # From an untrusted peer the headers change nothing.
        assert self.key_in(key, OTHER, **{"X-Forwarded-For": ADDRESS}) == OTHER

    def test_several_forwarded_for_headers_are_one_chain(self):
        key = remote_address(trusted_proxies="10.0.0.0/8")
        app = new_app()
        headers = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", f"{ADDRESS}, 10.0.0.3")]
        with app.test_request_context(environ_base={"REMOTE_ADDR": PROXY}, headers=headers):
            assert key() == ADDRESS

    def test_a_spoofed_header_from_an_untrusted_peer_changes_nothing(self, store):
        app = new_app()
        Limiter(app=app, storage=store, trusted_proxies=["10.0.0.0/8"], default_limits="2/minute")
        routes(app, "a")
        codes = [
            get(app, "/a", ADDRESS, headers={"X-Forwarded-For": f"192.0.2.{n}"}).status_code
            for n in range(4)
        ]
        assert codes == [200, 200, 429, 429]

    def test_clients_behind_a_trusted_proxy_are_limited_apart(self, store):
        app = new_app()
        Limiter(app=app, storage=store, trusted_proxies=["10.0.0.0/8"], default_limits="2/minute")
        routes(app, "a")
        for client in (ADDRESS, OTHER):
            via = {"X-Forwarded-For": f"6.6.6.6, {client}"}
            assert statuses(app, "/a", 3, PROXY, headers=via) == [200, 200, 429]
        # The proxy itself, without a header, is one more client.
        assert statuses(app, "/a", 1, "10.0.0.2") == [200]

    def test_ipv6_clients_are_keyed_by_their_64(self, store):
        app = new_app()
        Limiter(app=app, storage=store, default_limits="2/minute")
        routes(app, "a")
        assert get(app, "/a", "2001:db8:1:2::1").status_code == 200
        assert get(app, "/a", "2001:db8:1:2:ffff::9").status_code == 200
        assert get(app, "/a", "2001:db8:1:2::3").status_code == 429
        assert get(app, "/a", "2001:db8:1:3::1").status_code == 200
        key = remote_address()
        assert self.key_in(key, "2001:db8:1:2::1") == "2001:db8:1:2::/64"
        assert self.key_in(remote_address(ipv6_prefix=128), "2001:db8::1") == "2001:db8::1"
        assert self.key_in(key, ADDRESS) == ADDRESS

    @pytest.mark.parametrize(
        ("one", "other"),
        [("a:b", "a%3Ab"), ("{a}", "%7Ba%7D"), ("a b", "a%20b"), ("x" * 300, "#" + "0" * 64)],
    )
    def test_keys_cannot_collide(self, store, one, other):
        decided: list[RateLimitDecided] = []
        app = new_app()
        Limiter(
            lambda: request.headers["X-Key"],
            app=app,
            storage=store,
            default_limits="1/minute",
            listeners=[lambda e: decided.append(e) if isinstance(e, RateLimitDecided) else None],
        )
        routes(app, "a")
        assert statuses(app, "/a", 2, headers={"X-Key": one}) == [200, 429]
        assert statuses(app, "/a", 2, headers={"X-Key": other}) == [200, 429]
        keys = {event.key for event in decided}
        assert len(keys) == 2
        assert not any(c in key for key in keys for c in ":{} ")

    def test_key_prefix(self, store):
        decided: list[RateLimitDecided] = []
        app = new_app()
        Limiter(
            get_remote_address,
            app=app,
            storage=store,
            default_limits="1/minute",
            key_prefix="shop:v1",
            listeners=[lambda e: decided.append(e) if isinstance(e, RateLimitDecided) else None],
        )
        routes(app, "a")
        get(app, "/a")
        assert decided[0].key == f"shop%3Av1:{ADDRESS}"


class TestStrategies:
    @pytest.mark.parametrize("strategy", [*ALGORITHMS, "moving-window"])
    def test_every_strategy_limits(self, store, strategy):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, strategy=strategy)
        app.add_url_rule("/x", "x", limiter.limit("3/minute")(lambda: "x"))
        responses = [get(app, "/x") for _ in range(4)]
        assert [r.status_code for r in responses] == [200, 200, 200, 429]
        # At most a period, except for the counter, which weighs the last window's count.
        assert 1 <= int(responses[-1].headers["Retry-After"]) <= 120
        engine = engine_of(app, limiter)
        expected = "sliding-window" if strategy == "moving-window" else strategy
        assert engine.strategy == expected


class TestBadInput:
    def test_a_bad_limit_string_fails_at_decoration_naming_it(self):
        limiter = Limiter(get_remote_address)
        with pytest.raises(ConfigurationError, match="'10 per fortnight'"):
            limiter.limit("10 per fortnight")
        with pytest.raises(ConfigurationError, match="'ten/minute'"):
            limiter.shared_limit("ten/minute", scope="s")
        with pytest.raises(ConfigurationError, match="'1/minute; 2 per'"):
            Limiter(get_remote_address, default_limits=["1/minute; 2 per"])
        with pytest.raises(ConfigurationError, match="'0/minute'"):
            Limiter(get_remote_address, application_limits="0/minute")

    def test_a_bad_strategy(self):
        with pytest.raises(ConfigurationError, match="'leaky-bucket'") as info:
            Limiter(get_remote_address, strategy="leaky-bucket")
        assert "fixed-window" in str(info.value)
        assert "moving-window" in str(info.value)

    def test_a_bad_fault_policy(self):
        with pytest.raises(ConfigurationError, match="'ignore'"):
            Limiter(get_remote_address, on_store_error="ignore")  # type: ignore[arg-type]

    @pytest.mark.parametrize(("cost", "error"), [("2", TypeError), (-1, ValueError)])
    def test_a_bad_cost_fails_at_decoration(self, cost, error):
        with pytest.raises(error, match="cost"):
            Limiter(get_remote_address).limit("1/minute", cost=cost)

    @pytest.mark.parametrize(
        ("cost", "error"), [("2", TypeError), (-1, ValueError), (6, ValueError)]
    )
    def test_a_bad_cost_from_a_function_fails_the_request(self, store, cost, error):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store)
        app.add_url_rule("/x", "x", limiter.limit("5/minute", cost=lambda: cost)(lambda: "x"))
        with pytest.raises(error, match="cost"):
            get(app, "/x")

    def test_a_key_function_must_return_a_str(self, store):
        app = new_app()
        Limiter(lambda: 42, app=app, storage=store, default_limits="1/minute")  # type: ignore[arg-type, return-value]
        routes(app, "a")
        with pytest.raises(TypeError, match="must return a non-empty str, got 42"):
            get(app, "/a")

    def test_the_app_first_is_flask_limiters_old_order(self):
        with pytest.raises(TypeError, match="Limiter\\(get_remote_address, app=app\\)"):
            Limiter(new_app())  # type: ignore[arg-type]

    def test_other_bad_arguments(self, store):
        with pytest.raises(ValueError, match="'nope' is not an IP address"):
            Limiter(trusted_proxies=["nope"])
        with pytest.raises(ValueError, match="ipv6_prefix"):
            Limiter(ipv6_prefix=129)
        with pytest.raises(TypeError, match="not both"):
            Limiter(get_remote_address, storage=store, storage_uri="memory://")
        with pytest.raises(TypeError, match="storage must be a store"):
            Limiter(get_remote_address, storage="memory://")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="scope"):
            Limiter(get_remote_address).shared_limit("1/minute", scope="")
        with pytest.raises(TypeError, match="view function or a blueprint"):
            Limiter(get_remote_address).limit("1/minute")("not a view")  # type: ignore[type-var]
        with pytest.raises(TypeError, match="key_func must be callable"):
            Limiter("address")  # type: ignore[arg-type]


# -- Redis ----------------------------------------------------------------------------------------


@pytest.fixture
def redis_stores() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for store in made:
        store.close()


def redis_store(url: str, prefix: str, stores: list[Any], **options: Any) -> Any:
    from buttress.storage.redis import RedisStorage  # noqa: PLC0415 - needs the redis extra

    store = RedisStorage.from_url(url, prefix=prefix, **options)
    stores.append(store)
    return store


class TestRedis:
    @pytest.fixture
    def prefix(self, redis_prefix: str) -> str:
        return f"{redis_prefix}-flask-{uuid.uuid4().hex[:8]}"

    def test_the_chapter_app_on_redis(self, redis_url, prefix):
        app, limiter = chapter_app(storage_uri=redis_url, storage_options={"prefix": prefix})
        try:
            assert statuses(app, "/limited", 11) == [200] * 10 + [429]
            assert statuses(app, "/more_limited", 3) == [200, 200, 429]
            response = get(app, "/limited")
            assert response.headers["Retry-After"] in ("3599", "3600")
        finally:
            engine_of(app, limiter).storage.close()

    def test_storage_options_from_config(self, redis_url, prefix):
        app = new_app(BUTTRESS_STORAGE_URI=redis_url, BUTTRESS_STORAGE_OPTIONS={"prefix": prefix})
        limiter = Limiter(get_remote_address, app=app, default_limits="1/minute")
        routes(app, "a")
        try:
            assert statuses(app, "/a", 2) == [200, 429]
            assert repr(engine_of(app, limiter).storage).endswith(f"prefix={prefix!r})")
        finally:
            engine_of(app, limiter).storage.close()

    def test_processes_share_the_counts(self, redis_url, prefix, redis_stores):
        apps = []
        for _ in range(2):  # two apps, two stores: two processes
            app = new_app()
            store = redis_store(redis_url, prefix, redis_stores)
            limiter = Limiter(
                get_remote_address, app=app, storage=store, application_limits="9/hour"
            )
            app.add_url_rule("/a", "a", limiter.limit("5/minute")(lambda: "a"))
            routes(app, "b")
            apps.append(app)
        first, second = apps
        assert statuses(first, "/a", 3) + statuses(second, "/a", 3) == [200] * 5 + [429]
        assert statuses(second, "/b", 5) == [200] * 4 + [429]  # 9 per hour in all

    def test_keys_live_under_the_prefix_escaped(self, redis_url, prefix, redis_stores):
        import redis  # noqa: PLC0415

        app = new_app()
        store = redis_store(redis_url, prefix, redis_stores)
        Limiter(
            lambda: "user:{1}",
            app=app,
            storage=store,
            application_limits="10/minute",
            default_limits="1/minute",
        )
        routes(app, "a")
        assert statuses(app, "/a", 2) == [200, 429]
        client = redis.Redis.from_url(redis_url)
        try:
            keys = sorted(key.decode() for key in client.scan_iter(match=f"{{{prefix}*"))
        finally:
            client.close()
        assert keys == [
            f"{{{prefix}:user%3A%7B1%7D}}:global:fw:10:60.0",
            f"{{{prefix}:user%3A%7B1%7D}}:route/a:fw:1:60.0",
        ]
        # The rejected request took nothing from the application limit.
        application = (Rate(10, 60, scope="global"),)
        peek = store.decide("fixed-window", "user%3A%7B1%7D", application, 1, consume=False)
        assert peek.remaining == 8  # 9 left: 1 taken by the admitted request

    @pytest.mark.parametrize("strategy", ALGORITHMS)
    def test_every_strategy_on_redis(self, redis_url, prefix, redis_stores, strategy):
        app = new_app()
        store = redis_store(redis_url, prefix, redis_stores)
        limiter = Limiter(get_remote_address, app=app, storage=store, strategy=strategy)
        app.add_url_rule("/x", "x", limiter.limit("3/minute")(lambda: "x"))
        routes(app, "y")
        assert statuses(app, "/x", 4) == [200, 200, 200, 429]


# -- a Redis that dies ----------------------------------------------------------------------------


class TestStoreDown:
    def make(self, server: PrivateRedis, stores: list[Any], policy: str) -> tuple[Flask, list[Any]]:
        events: list[Any] = []
        app = new_app()
        store = redis_store(server.url, "faults", stores, timeout=0.2)
        Limiter(
            get_remote_address,
            app=app,
            storage=store,
            default_limits="3/minute",
            on_store_error=policy,  # type: ignore[arg-type]
            listeners=[events.append],
        )
        routes(app, "a")
        return app, events

    def timed_statuses(self, app: Flask, count: int) -> list[Any]:
        responses = []
        for _ in range(count):
            began = time.monotonic()
            response = get(app, "/a", headers={"Accept": "application/json"})
            assert time.monotonic() - began < 2.0  # a dead store never hangs a request
            responses.append(response)
        return responses

    @pytest.mark.parametrize(
        ("policy", "expected"),
        [
            # The first request counted on Redis; the local store starts afresh.
            ("local", [200, 200, 200, 429, 429]),
            ("fail-open", [200] * 5),
            ("fail-closed", [429] * 5),
        ],
    )
    def test_each_policy_answers_never_a_500(self, server, redis_stores, caplog, policy, expected):
        app, events = self.make(server, redis_stores, policy)
        assert get(app, "/a").status_code == 200
        server.stop()
        with caplog.at_level(logging.ERROR, logger="buttress.ratelimit"):
            responses = self.timed_statuses(app, 5)
        assert [r.status_code for r in responses] == expected
        degraded = [event for event in events if isinstance(event, StoreDegraded)]
        assert degraded
        assert degraded[0].mode == policy
        assert any("store failed" in record.getMessage() for record in caplog.records)
        for response in responses:
            text = response.get_data(as_text=True).lower()
            for internal in ("redis", "connection", "traceback", "storage", "127.0.0.1"):
                assert internal not in text
            if response.status_code == 429:
                assert int(response.headers["Retry-After"]) >= 1
                assert json.loads(text)["error"] == "too_many_requests"

    def test_requests_go_on_while_the_store_comes_back(self, server, redis_stores):
        app, events = self.make(server, redis_stores, "local")
        server.stop()
        assert [r.status_code for r in self.timed_statuses(app, 2)] == [200, 200]
        server.start()
        # Two failures are fewer than the guard's three: the next request asks Redis again,
        # which restarted empty.
        assert [r.status_code for r in self.timed_statuses(app, 4)] == [200, 200, 200, 429]
        assert [type(event).__name__ for event in events if "Store" in type(event).__name__] == [
            "StoreDegraded",
            "StoreRecovered",
        ]


def test_flask_is_imported_by_nobody_else() -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = (
        "import sys, buttress, buttress.contrib, buttress.demo, buttress.ratelimit, "
        "buttress.storage, buttress._cli\n"
        "assert 'flask' not in sys.modules and 'werkzeug' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603


def test_nothing_carries_over_between_requests_in_one_app_context() -> None:
    app = new_app()
    limiter = Limiter(get_remote_address, app=app, default_limits="5/minute")
    routes(app, "a")
    app.add_url_rule("/free", "free", limiter.exempt(lambda: "free"))
    with app.app_context():
        assert "RateLimit-Limit" in get(app, "/a").headers
        assert "RateLimit-Limit" not in get(app, "/free").headers


def _never() -> bool:
    return False


class TestFixedPlans:
    """Routes whose limits depend on nothing but the key are decided by a plan made ready once.

    Giving each limit an ``exempt_when`` that never exempts makes the same limits go the general
    way, reading every spec per request: both must answer alike.
    """

    @staticmethod
    def chapter(limiter: Limiter, app: Flask, extra: dict[str, Any]) -> None:
        routes(app, "limited")
        strict = limiter.limit("2/minute", error_message="Slow down", **extra)
        app.add_url_rule("/strict", "strict", strict(lambda: "strict"))

    @staticmethod
    def layered(limiter: Limiter, app: Flask, extra: dict[str, Any]) -> None:
        group = limiter.shared_limit("4/minute", "group", error_message="Group", **extra)
        again = limiter.shared_limit("4/minute; 9/hour", "group", error_message="Again", **extra)
        app.add_url_rule("/a", "a", group(again(lambda: "a")), methods=["GET", "POST"])
        keep = limiter.limit("3/minute", override_defaults=False, per_method=True, **extra)
        app.add_url_rule("/b", "b", keep(lambda: "b"), methods=["GET", "POST"])
        post_only = limiter.limit("1/minute", methods=["POST"], **extra)
        app.add_url_rule("/c", "c", post_only(lambda: "c"), methods=["GET", "POST"])

    @staticmethod
    def costs(limiter: Limiter, app: Flask, extra: dict[str, Any]) -> None:
        app.add_url_rule("/a", "a", limiter.limit("5/minute", cost=2, **extra)(lambda: "a"))
        app.add_url_rule("/free", "free", limiter.limit("1/minute", cost=0, **extra)(lambda: "f"))

    @pytest.mark.parametrize("declare", ["chapter", "layered", "costs"])
    def test_fixed_and_general_plans_answer_alike(self, clock, declare):
        answers = []
        for extra in ({}, {"exempt_when": _never}):
            app = new_app()
            general = {"exempt_when": _never} if extra else {}
            limiter = Limiter(
                get_remote_address,
                app=app,
                storage=MemoryStorage(clock=clock),
                default_limits=["100 per day", "3 per minute"],
                application_limits="12/minute",
                default_limits_exempt_when=general.get("exempt_when"),
                application_limits_exempt_when=general.get("exempt_when"),
            )
            getattr(self, declare)(limiter, app, extra)
            seen = []
            for _ in range(3):
                for rule in list(app.url_map.iter_rules()):
                    if rule.endpoint == "static":
                        continue
                    for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                        for address in (ADDRESS, OTHER):
                            client = app.test_client()
                            response = client.open(
                                rule.rule,
                                method=method,
                                environ_base={"REMOTE_ADDR": address},
                                headers={"Accept": "application/json"},
                            )
                            headers = [(n, v) for n, v in response.headers if "-" in n]
                            seen.append((response.status_code, response.data, headers))
            plans = app.extensions["buttress.flask"][limiter].plans.values()
            assert any(plan.specs for plan in plans)
            # (A cost of 2 beside the application's cost of 1 is two decisions: the general way.)
            assert any(plan.fixed for plan in plans) == (not extra)
            answers.append(seen)
        assert 429 in {status for status, _, _ in answers[0]}
        assert answers[0] == answers[1]

    def test_headers_the_view_set_are_replaced(self, store):
        app = new_app()
        Limiter(get_remote_address, app=app, storage=store, default_limits="5/minute")
        app.add_url_rule(
            "/a", "a", lambda: ("a", {"ratelimit-limit": "99", "RateLimit-Limit": "98", "X-A": "1"})
        )
        response = get(app, "/a")
        assert [
            (n, v) for n, v in response.headers if n not in ("Content-Type", "Content-Length")
        ] == [
            ("X-A", "1"),
            ("RateLimit-Limit", "5"),
            ("RateLimit-Remaining", "4"),
            ("RateLimit-Reset", "60"),
            ("RateLimit-Policy", "5;w=60"),
        ]

    def test_escaped_keys_are_kept_for_a_bounded_number_of_clients(self, clock, store, monkeypatch):
        decided: list[RateLimitDecided] = []
        monkeypatch.setattr("buttress.contrib.flask._KEYS_KEPT", 2)
        app = new_app()
        limiter = Limiter(
            lambda: request.headers["X-Key"],
            app=app,
            storage=store,
            default_limits="1/minute",
            key_prefix="p",
            listeners=[lambda e: decided.append(e) if isinstance(e, RateLimitDecided) else None],
        )
        routes(app, "a")
        for client in ("a:b", "c", "d e", "f", "a:b"):
            assert statuses(app, "/a", 2, headers={"X-Key": client}) == [200, 429]
            assert len(limiter._keys) <= 2
            clock.advance(60)
        keys = [event.key for event in decided[::2]]
        assert keys == ["p:a%3Ab", "p:c", "p:d%20e", "p:f", "p:a%3Ab"]
        assert [event.key for event in decided[1::2]] == keys

    def test_a_declaration_after_requests_makes_the_plans_again(self, store):
        app = new_app()
        limiter = Limiter(get_remote_address, app=app, storage=store, default_limits="5/minute")

        def view() -> str:
            return "a"

        app.add_url_rule("/a", "a", view)
        assert get(app, "/a").headers["RateLimit-Limit"] == "5"
        limiter.limit("1/minute")(view)
        assert get(app, "/a").headers["RateLimit-Limit"] == "1"
        assert get(app, "/a").status_code == 429
