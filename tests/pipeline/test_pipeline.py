"""The Pipeline front: composition, decorator, call/acall, sharing across threads and tasks."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import threading
from collections.abc import Callable
from typing import Any, cast

import pytest

from buttress import CircuitBreaker, Limiter, Retry, RetryBudget
from buttress.bulkhead import Bulkhead, KeyedBulkhead, ThreadPoolBulkhead
from buttress.fallback import Fallback
from buttress.pipeline import Pipeline, Policy, keyed, pipeline
from buttress.testing import FakeClock
from tests._threads import run_in_threads
from tests.pipeline._script import Script


def budgeted(**options: Any) -> Retry:
    return Retry(budget=RetryBudget(), **options)


class Recording:
    """A policy of the ``call``/``acall`` protocol only, recording what it ran."""

    def __init__(self, log: list[str], label: str) -> None:
        self.log = log
        self.label = label

    def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.log.append(f"{self.label} in")
        try:
            return fn(*args, **kwargs)
        finally:
            self.log.append(f"{self.label} out")

    async def acall(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.log.append(f"{self.label} in")
        try:
            return await fn(*args, **kwargs)
        finally:
            self.log.append(f"{self.label} out")


class TestComposition:
    def test_policies_run_outermost_first(self):
        log: list[str] = []
        resilient = Pipeline(Recording(log, "a"), Recording(log, "b"), Recording(log, "c"))

        def work() -> str:
            log.append("work")
            return "done"

        assert resilient.call(work) == "done"
        assert log == ["a in", "b in", "c in", "work", "c out", "b out", "a out"]

    async def test_async_policies_run_outermost_first(self):
        log: list[str] = []
        resilient = Pipeline(Recording(log, "a"), Recording(log, "b"))

        async def work() -> str:
            log.append("work")
            return "done"

        assert await resilient.acall(work) == "done"
        assert log == ["a in", "b in", "work", "b out", "a out"]

    def test_a_protocol_policy_mixes_with_buttress_policies(self):
        log: list[str] = []
        dependency = Script(ConnectionError("down"), "ok")
        resilient = Pipeline(Retry(attempts=2, wait=0), Recording(log, "inner"))
        assert isinstance(log, list)
        assert isinstance(Recording(log, "x"), Policy)

        assert resilient.call(dependency) == "ok"
        assert log == ["inner in", "inner out", "inner in", "inner out"]

    def test_a_nested_pipeline_contributes_its_policies(self):
        outer, inner = Retry(attempts=2, wait=0), CircuitBreaker("nested", registry=None)
        combined = Pipeline(outer, Pipeline(inner))
        assert combined.policies == (outer, inner)
        assert len(combined) == 2

    def test_an_empty_pipeline_just_calls(self):
        assert Pipeline().call(lambda x: x + 1, 1) == 2

    def test_the_pipeline_function_is_the_class(self):
        retry = Retry(attempts=2)
        made = pipeline(retry, name="reads")
        assert isinstance(made, Pipeline)
        assert made.policies == (retry,)
        assert made.name == "reads"
        assert "reads" in repr(made)


class TestDecorator:
    def test_keeps_name_doc_and_signature(self):
        resilient = Pipeline(budgeted(attempts=2, wait=0), Bulkhead(2))

        def charge(order: str, amount: int = 1) -> str:
            """Charge an order."""
            return f"{order}:{amount}"

        protected = resilient(charge)
        assert protected("o1", amount=3) == "o1:3"
        assert protected.__name__ == "charge"
        assert protected.__doc__ == "Charge an order."
        assert inspect.signature(protected) == inspect.signature(charge)

    async def test_a_coroutine_function_stays_one(self):
        resilient = Pipeline(budgeted(attempts=2, wait=0), Bulkhead(2))

        @resilient
        async def fetch(key: str) -> str:
            return key.upper()

        assert inspect.iscoroutinefunction(fetch)
        assert await fetch("a") == "A"

    def test_methods(self):
        resilient = Pipeline(Retry(attempts=3, wait=0))

        class Client:
            def __init__(self) -> None:
                self.calls = 0

            @resilient
            def get(self, path: str) -> str:
                self.calls += 1
                if self.calls < 2:
                    raise ConnectionError(path)
                return path

        client = Client()
        assert client.get("/x") == "/x"
        assert client.calls == 2

    def test_refuses_what_it_cannot_wrap(self):
        resilient = Pipeline(Retry())

        def numbers():  # a generator: its body runs when iterated, outside the policies
            yield 1

        with pytest.raises(TypeError, match="generator"):
            resilient(numbers)
        with pytest.raises(TypeError, match="callables"):
            resilient(42)  # type: ignore[arg-type]

    def test_a_thread_pool_bulkhead_runs_the_inner_policies_on_its_threads(self):
        pool = ThreadPoolBulkhead(2, name="pool")
        resilient = Pipeline(budgeted(attempts=2, wait=0), pool)
        try:
            assert resilient.call(lambda: threading.current_thread().name).startswith(
                "buttress-pool"
            )
        finally:
            pool.shutdown()

    def test_a_thread_pool_bulkhead_cannot_hold_a_coroutine(self):
        pool = ThreadPoolBulkhead(2)
        resilient = Pipeline(pool)

        async def fetch() -> None:
            return None

        with pytest.raises(TypeError, match="use a Bulkhead"):
            resilient(fetch)


class TestCall:
    def test_composes_once_per_function(self):
        resilient = Pipeline(Retry(attempts=2, wait=0))

        def work(x: int) -> int:
            return x * 2

        assert [resilient.call(work, n) for n in range(3)] == [0, 2, 4]
        assert len(resilient._sync) == 1
        chain = resilient._sync[work]
        resilient.call(work, 5)
        assert resilient._sync[work] is chain

    def test_the_chain_goes_with_its_function(self):
        resilient = Pipeline(Retry(attempts=2, wait=0))

        def work() -> int:
            return 1

        resilient.call(work)
        assert len(resilient._sync) == 1
        del work
        gc.collect()
        assert len(resilient._sync) == 0

    def test_bound_methods_share_their_function_chain(self):
        resilient = Pipeline(Retry(attempts=2, wait=0))

        class Greeter:
            def __init__(self, name: str) -> None:
                self.name = name

            def greet(self, greeting: str) -> str:
                return f"{greeting}, {self.name}"

        assert resilient.call(Greeter("ann").greet, "hi") == "hi, ann"
        assert resilient.call(Greeter("bob").greet, greeting="yo") == "yo, bob"
        assert list(resilient._sync.keys()) == [Greeter.greet]

    def test_callables_without_weak_references_still_work(self):
        class Doubler:
            __slots__ = ()  # no __weakref__: cannot be a weak key

            def __call__(self, x: int) -> int:
                return 2 * x

        resilient = Pipeline(Retry(attempts=2, wait=0))
        assert resilient.call(Doubler(), 4) == 8
        assert len(resilient._sync) == 0

    def test_the_id_lookup_goes_with_its_function(self):
        resilient = Pipeline(Retry(attempts=2, wait=0))

        def work() -> int:
            return 1

        assert resilient.call(work) == 1
        assert list(resilient._sync_ids) == [id(work)]
        assert resilient._sync_ids[id(work)][1] is resilient._sync[work]
        del work
        gc.collect()
        assert resilient._sync_ids == {}

    def test_an_id_entry_of_another_object_is_not_used(self):
        resilient = Pipeline(Retry(attempts=2, wait=0))

        def work() -> str:
            return "mine"

        def other() -> str:
            return "other's"

        resilient.call(other)
        # As if `work` had been given the id of a function the lookup still knows.
        resilient._sync_ids[id(work)] = resilient._sync_ids[id(other)]
        assert resilient.call(work) == "mine"
        assert resilient._sync_ids[id(work)][0]() is work

    def test_bound_methods_are_found_by_their_function(self):
        resilient = Pipeline(Retry(attempts=2, wait=0))

        class Greeter:
            def __init__(self, name: str) -> None:
                self.name = name

            def greet(self) -> str:
                return self.name

            async def agreet(self) -> str:
                return self.name

        assert [resilient.call(Greeter(name).greet) for name in "abc"] == ["a", "b", "c"]
        assert list(resilient._sync_ids) == [id(Greeter.greet)]

        async def both() -> list[str]:
            return [await resilient.acall(Greeter(name).agreet) for name in "xy"]

        assert asyncio.run(both()) == ["x", "y"]
        assert list(resilient._async_ids) == [id(Greeter.agreet)]

    def test_refuses_coroutine_functions(self):
        async def fetch() -> None:
            return None

        with pytest.raises(TypeError, match="acall"):
            Pipeline(Retry()).call(cast(Any, fetch))

    async def test_acall_takes_any_function_returning_an_awaitable(self):
        resilient = Pipeline(Retry(attempts=2, wait=0))
        dependency = Script(ConnectionError("down"), "ok")

        def start() -> Any:
            return dependency.run()

        assert await resilient.acall(start) == "ok"
        assert dependency.calls == 2

    async def test_acall_bound_async_methods(self):
        resilient = Pipeline(Retry(attempts=2, wait=0))
        dependency = Script("ok")
        assert await resilient.acall(dependency.run, 1) == "ok"
        assert dependency.args == [(1,)]
        assert len(resilient._async) == 1

    async def test_acall_refuses_non_callables(self):
        with pytest.raises(TypeError, match="callable"):
            await Pipeline().acall(cast(Any, 3))


class TestArguments:
    def test_a_bare_limiter_names_the_adapter(self):
        with pytest.raises(TypeError, match=r"policies\[1\] is a Limiter.*limited\(limiter"):
            Pipeline(Retry(), Limiter("1/second"))

    def test_a_bare_keyed_bulkhead_names_the_adapter(self):
        with pytest.raises(TypeError, match=r"policies\[0\] is a KeyedBulkhead.*keyed\("):
            Pipeline(KeyedBulkhead(2))

    def test_something_else_is_refused_with_its_position(self):
        with pytest.raises(TypeError, match=r"policies\[1\] must be a policy.*got int"):
            Pipeline(Retry(), 3)

    def test_the_same_policy_twice_is_refused(self):
        slots = Bulkhead(1)
        with pytest.raises(ValueError, match=r"policies\[2\].*same object as policies\[0\]"):
            Pipeline(slots, Retry(), slots)

    def test_name_and_allow_are_checked(self):
        with pytest.raises(TypeError, match="name"):
            Pipeline(name="")
        with pytest.raises(TypeError, match="allow"):
            Pipeline(allow="two-breakers")
        with pytest.raises(ValueError, match="unknown rules"):
            Pipeline(allow=["no-such-rule"])


class TestSharing:
    def test_threads_share_one_pipeline(self):
        slots = Bulkhead(2, max_waiting=16, max_wait=10)
        guard = CircuitBreaker(
            "shared", failure_rate=0.9, window_size=1000, min_calls=1000, registry=None
        )
        lock = threading.Lock()
        running = 0
        most = 0
        failed: set[tuple[int, int]] = set()

        def dependency(thread: int, call: int) -> tuple[int, int]:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            try:
                # every third call fails its first attempt once
                with lock:
                    first = (thread, call) not in failed
                    failed.add((thread, call))
                if call % 3 == 0 and first:
                    raise ConnectionError("blip")
                return thread, call
            finally:
                with lock:
                    running -= 1

        resilient = Pipeline(budgeted(attempts=2, wait=0), slots, guard)
        protected = resilient(dependency)

        def work(thread: int) -> list[tuple[int, int]]:
            return [protected(thread, call) for call in range(40)]

        results = run_in_threads(8, work)
        assert results == [[(thread, call) for call in range(40)] for thread in range(8)]
        assert most <= 2
        assert slots.stats().in_use == 0
        metrics = guard.metrics()
        assert metrics.failures == 8 * 14  # one per failed first attempt: every attempt counts
        assert metrics.calls == 8 * (40 + 14)

    async def test_tasks_share_one_pipeline(self):
        slots = Bulkhead(3, max_waiting=100, max_wait=10)
        running = 0
        most = 0

        async def dependency(n: int) -> int:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.001)
            running -= 1
            return n

        resilient = Pipeline(budgeted(attempts=2, wait=0), slots)
        results = await asyncio.gather(*(resilient.acall(dependency, n) for n in range(30)))
        assert results == list(range(30))
        assert most == 3
        assert slots.stats().in_use == 0

    def test_keyed_bulkhead_partitions_by_argument(self):
        tenants = KeyedBulkhead(1)
        resilient = Pipeline(
            Fallback("busy", on=Exception),
            keyed(tenants, key=lambda tenant, *_: tenant),
        )
        inside = threading.Event()
        release = threading.Event()

        def slow(tenant: str) -> str:
            inside.set()
            release.wait(5)
            return tenant

        holder = threading.Thread(target=lambda: resilient.call(slow, "a"))
        holder.start()
        try:
            assert inside.wait(5)
            assert resilient.call(lambda tenant: tenant, "a") == "busy"  # a's one slot is held
            assert resilient.call(lambda tenant: tenant, "b") == "b"
        finally:
            release.set()
            holder.join()


def test_reusable_with_fake_clock_across_pipelines():
    clock = FakeClock()
    retry = Retry(attempts=3, wait=1, clock=clock)
    first, second = Pipeline(retry), Pipeline(retry, Bulkhead(1), allow=["retry-outside-limit"])
    flaky = Script(ConnectionError("1"), "a", ConnectionError("2"), "b")
    assert first.call(flaky) == "a"
    assert second.call(flaky) == "b"
    assert clock.sleeps == [1.0, 1.0]


def test_decorated_functions_keep_wrapped_chain():
    resilient = Pipeline(budgeted(attempts=2), Bulkhead(1))

    def work() -> None:
        return None

    protected = resilient(work)
    inner: Any = protected
    depth = 0
    while hasattr(inner, "__wrapped__"):
        inner = inner.__wrapped__
        depth += 1
    assert inner is work
    assert depth == 2
    assert isinstance(protected, functools.partial) is False
