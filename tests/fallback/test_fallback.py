"""Fallback: values, handlers, selection by exception, rejection and result; sync and async."""

from __future__ import annotations

import asyncio

import pytest

from buttress import BulkheadFull, CircuitBreaker, CircuitOpen, Rejected
from buttress.bulkhead import Bulkhead
from buttress.fallback import Fallback, FallbackUsed, fallback


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom("down")


class TestConstruction:
    @pytest.mark.parametrize(
        ("args", "options", "error", "words"),
        [
            ((), {}, TypeError, "exactly one of value"),
            ((1,), {"handler": str}, TypeError, "exactly one of value"),
            ((), {"handler": 3}, TypeError, "handler must be callable"),
            ((1,), {"on": "x"}, TypeError, "on must be an exception type"),
            ((1,), {"on": ()}, ValueError, "on must name at least one"),
            ((1,), {"on": KeyboardInterrupt}, TypeError, "Exception subclasses"),
            ((1,), {"on": asyncio.CancelledError}, TypeError, "Exception subclasses"),
            ((1,), {"on": None}, ValueError, "give on_result"),
            ((1,), {"on_result": 3}, TypeError, "on_result must be callable"),
            ((1,), {"name": ""}, TypeError, "name must be a non-empty str"),
        ],
    )
    def test_bad_arguments(self, args, options, error, words):
        with pytest.raises(error, match=words):
            Fallback(*args, **options)

    def test_none_is_a_value(self):
        assert Fallback(None).call(boom) is None


class TestSync:
    def test_value_replaces_a_selected_exception(self):
        events: list[object] = []

        @fallback("cached", on=Boom, listeners=[events.append])
        def fetch() -> str:
            raise Boom("down")

        assert fetch() == "cached"
        assert fetch.__name__ == "fetch"
        assert isinstance(events[0], FallbackUsed)
        target = "TestSync.test_value_replaces_a_selected_exception.fetch"
        assert events[0].describe() == f"fallback: {target} failed with Boom: down; fallback used"

    def test_other_exceptions_propagate_untouched(self):
        error = KeyError("k")

        def fn() -> None:
            raise error

        with pytest.raises(KeyError) as info:
            Fallback(0, on=Boom).call(fn)
        assert info.value is error
        assert not hasattr(error, "__notes__")

    def test_handler_receives_the_exception(self):
        seen: list[BaseException] = []

        def handler(error: BaseException) -> str:
            seen.append(error)
            return "handled"

        assert Fallback(handler=handler).call(boom) == "handled"
        assert isinstance(seen[0], Boom)

    def test_handler_may_reraise(self):
        def handler(error: BaseException) -> None:
            raise RuntimeError("no fallback either")

        with pytest.raises(RuntimeError) as info:
            Fallback(handler=handler).call(boom)
        assert isinstance(info.value.__context__, Boom)

    def test_selected_by_rejection_type(self):
        breaker = CircuitBreaker("svc", registry=None)
        breaker.open()
        b = Bulkhead(1)
        b.acquire()
        on_rejection = Fallback("degraded", on=Rejected)
        assert on_rejection.call(breaker.call, lambda: "live") == "degraded"
        assert on_rejection.call(b.call, lambda: "live") == "degraded"
        only_circuit = Fallback("degraded", on=CircuitOpen)
        with pytest.raises(BulkheadFull):
            only_circuit.call(b.call, lambda: "live")
        with pytest.raises(Boom):  # a failure, not a rejection: not replaced
            on_rejection.call(boom)

    def test_result_predicate(self):
        policy = Fallback(handler=lambda r: r + 100, on=None, on_result=lambda r: r < 0)
        assert policy.call(lambda: -1) == 99
        assert policy.call(lambda: 5) == 5
        with pytest.raises(Boom):  # on=None: no exception is replaced
            policy.call(boom)

    def test_coroutine_handler_needs_async(self):
        async def handler(error: BaseException) -> str:
            return "x"

        policy = Fallback(handler=handler)
        with pytest.raises(TypeError, match="acall"):
            policy.call(boom)
        with pytest.raises(TypeError, match="acall"):
            policy(boom)

        async def coro() -> None:
            return None

        with pytest.raises(TypeError, match="acall"):
            Fallback(1).call(coro)  # type: ignore[unused-coroutine]


class TestAsync:
    async def test_value_and_coroutine_handler(self):
        async def failing() -> str:
            raise Boom

        async def handler(error: BaseException) -> str:
            await asyncio.sleep(0)
            return f"handled {type(error).__name__}"

        assert await Fallback("v").acall(failing) == "v"
        assert await Fallback(handler=handler).acall(failing) == "handled Boom"

        @fallback(handler=lambda r: "replaced", on=None, on_result=lambda r: r == "bad")
        async def result(value: str) -> str:
            return value

        assert await result("bad") == "replaced"
        assert await result("good") == "good"

    async def test_cancellation_is_never_replaced(self):
        async def slow() -> None:
            await asyncio.sleep(10)

        task = asyncio.create_task(Fallback("v").acall(slow))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
