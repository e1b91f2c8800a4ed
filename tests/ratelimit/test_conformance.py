"""One conformance suite for every store: the same scenarios give the same answers.

Every test runs against the memory store and against Redis (the real server of ``redis_url``,
under the run's key prefix), always with an explicit ``now`` so that both decide on the same
clock. The expected decisions come from the pure reference, :func:`buttress.ratelimit._algorithms
.decide`, and a few are also written out by hand. Every test uses keys of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buttress.ratelimit import ALGORITHMS, Decision, Rate
from buttress.ratelimit._algorithms import State, decide
from buttress.storage import MemoryStorage, Storage
from buttress.testing import FakeClock

T0 = 1_000_000.0  # explicit times start here (any value works; Redis never sees its own clock)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[Storage]:
    if request.param == "memory":
        # A clock far from T0 (as the Redis server's is), so that a store reading its own clock
        # instead of the explicit time would give itself away.
        yield MemoryStorage(clock=FakeClock(10 * T0))
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    from buttress.storage.redis import RedisStorage  # noqa: PLC0415 - needs the redis extra

    redis_store = RedisStorage.from_url(url, prefix=f"{prefix}-conformance")
    yield redis_store
    redis_store.close()


@pytest.fixture
async def astore(store: Storage) -> AsyncIterator[Storage]:
    """The same store, for coroutine tests: its asyncio client is closed with the test's loop."""
    yield store
    aclose: Callable[[], Any] | None = getattr(store, "aclose", None)
    if aclose is not None:
        await aclose()


@pytest.fixture
def store_time(store: Storage, request: pytest.FixtureRequest) -> Iterator[Callable[[], float]]:
    """The store's own clock (what it uses when ``now`` is not given): for lease tests, whose
    ``release_lease`` takes no time argument in the storage protocol."""
    if isinstance(store, MemoryStorage):
        yield store._clock.now
        return
    import redis  # noqa: PLC0415 - the redis extra is optional

    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))

    def server_time() -> float:
        seconds, micros = cast("tuple[int, int]", client.time())
        return seconds + micros / 1e6

    yield server_time
    client.close()


def fresh_key(label: str = "k") -> str:
    return f"{label}:{uuid.uuid4().hex}"


class Reference:
    """The pure algorithms with states of their own: what every store must answer."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, str, tuple[Rate, ...]], list[State]] = {}

    def decide(
        self,
        algorithm: str,
        key: str,
        rates: tuple[Rate, ...],
        cost: int,
        *,
        consume: bool = True,
        now: float,
    ) -> Decision:
        states = self.states.setdefault((algorithm, key, rates), [None] * len(rates))
        return decide(algorithm, states, rates, now, cost, consume=consume)

    def reset(self, algorithm: str, key: str, rates: tuple[Rate, ...]) -> None:
        self.states.pop((algorithm, key, rates), None)


Step = tuple[float, int, bool]
"""(seconds after T0, cost, consume) of one call."""


def check_steps(
    store: Storage, algorithm: str, rates: tuple[Rate, ...], steps: list[Step]
) -> list[Decision]:
    """Run the steps on the store and on the reference; every decision must be the same."""
    key, reference = fresh_key(algorithm), Reference()
    decisions = []
    for number, (offset, cost, consume) in enumerate(steps):
        now = T0 + offset
        got = store.decide(algorithm, key, rates, cost, consume=consume, now=now)
        want = reference.decide(algorithm, key, rates, cost, consume=consume, now=now)
        assert got == want, f"step {number} (+{offset} s, cost {cost}, consume {consume})"
        decisions.append(got)
    return decisions


# The hand-computed scenarios of test_algorithms.py, as (offset, cost, consume) steps.
SCENARIOS: dict[str, tuple[tuple[Rate, ...], list[Step]]] = {
    "fixed-window": (
        (Rate(3, per=10),),
        [
            (5, 1, True),
            (6, 1, True),
            (7, 1, True),
            (8, 1, True),
            (14.5, 1, True),
            (15, 1, True),
            (15, 3, True),
            (15, 2, False),
            (15, 2, True),
            (24.999, 1, True),
        ],
    ),
    "sliding-window": (
        (Rate(3, per=10),),
        [
            (0, 1, True),
            (4, 1, True),
            (8, 1, True),
            (9, 1, True),
            (10, 1, True),
            (10, 1, True),
            (14, 2, True),
            (14, 1, False),
            (14, 1, True),
            (18, 2, True),
            (20, 2, True),
        ],
    ),
    "sliding-window-counter": (
        (Rate(10, per=60),),
        [
            (30, 6, True),
            (80, 6, True),
            (80, 1, True),
            (90, 1, True),
            (90, 1, True),
            (100, 4, True),
            (100, 1, False),
            (100, 1, True),
            (1000, 10, True),
        ],
    ),
    "token-bucket": (
        (Rate(4, per=2),),
        [
            (0, 4, True),
            (0, 1, True),
            (0.5, 1, True),
            (1, 2, True),
            (1.5, 2, True),
            (100, 4, True),
            (100, 1, True),
            (100.25, 1, True),
            (100.5, 1, True),
        ],
    ),
    "gcra": (
        (Rate(4, per=2),),
        [
            (0, 4, True),
            (0, 1, True),
            (0.5, 1, True),
            (1, 2, True),
            (1.5, 2, True),
            (100, 4, True),
            (100, 1, True),
            (100.25, 1, True),
            (100.5, 1, True),
        ],
    ),
}


class TestDecisions:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_hand_computed_scenario(self, store, algorithm):
        rates, steps = SCENARIOS[algorithm]
        decisions = check_steps(store, algorithm, rates, steps)
        assert decisions[0].allowed
        assert any(not d.allowed for d in decisions)
        assert all(d.retry_after is not None for d in decisions if not d.allowed)

    def test_fixed_window_by_hand(self, store):
        key, rates = fresh_key(), (Rate(2, per=10),)
        first = store.decide("fixed-window", key, rates, 1, now=T0 + 3)
        assert first == Decision(True, 2, 1, 10.0, None, rates[0])
        store.decide("fixed-window", key, rates, 1, now=T0 + 4)
        rejected = store.decide("fixed-window", key, rates, 1, now=T0 + 5.5)
        assert rejected == Decision(False, 2, 0, 7.5, 7.5, rates[0])
        assert store.decide("fixed-window", key, rates, 2, now=T0 + 13).allowed

    def test_sliding_window_by_hand(self, store):
        key, rates = fresh_key(), (Rate(2, per=10),)
        store.decide("sliding-window", key, rates, 1, now=T0)
        store.decide("sliding-window", key, rates, 1, now=T0 + 6)
        rejected = store.decide("sliding-window", key, rates, 1, now=T0 + 9)
        assert (rejected.allowed, rejected.retry_after, rejected.reset_after) == (False, 1.0, 7.0)
        assert store.decide("sliding-window", key, rates, 1, now=T0 + 10).allowed
        assert not store.decide("sliding-window", key, rates, 1, now=T0 + 15.75).allowed

    @pytest.mark.parametrize("algorithm", ["token-bucket", "gcra"])
    def test_bucket_by_hand(self, store, algorithm):
        key, rates = fresh_key(), (Rate(4, per=2),)
        assert store.decide(algorithm, key, rates, 4, now=T0).remaining == 0
        rejected = store.decide(algorithm, key, rates, 3, now=T0 + 0.5)
        assert rejected == Decision(False, 4, 1, 1.5, 1.0, rates[0])
        assert store.decide(algorithm, key, rates, 3, now=T0 + 1.5).allowed

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_several_rates_all_or_nothing(self, store, algorithm):
        rates = (Rate(2, per=1), Rate(3, per=60))
        steps: list[Step] = [(0, 1, True), (0, 1, True), (0, 1, True), (1, 1, True)]
        steps += [(1, 1, True), (1.5, 1, False), (61, 2, True), (61, 1, True), (62, 1, True)]
        decisions = check_steps(store, algorithm, rates, steps)
        assert not decisions[2].allowed
        assert decisions[2].rate == rates[0]

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_the_same_rate_twice(self, store, algorithm):
        rates = (Rate(3, per=60), Rate(3, per=60))
        check_steps(store, algorithm, rates, [(0, 2, True), (1, 2, True), (1, 1, True)])

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_peek_counts_nothing(self, store, algorithm):
        key, rates = fresh_key(), (Rate(2, per=60),)
        for _ in range(5):
            peeked = store.decide(algorithm, key, rates, 2, consume=False, now=T0)
            assert (peeked.allowed, peeked.remaining) == (True, 0)
        assert store.decide(algorithm, key, rates, 2, now=T0).allowed
        assert not store.decide(algorithm, key, rates, 1, consume=False, now=T0).allowed

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_reset(self, store, algorithm):
        key, rates = fresh_key(), (Rate(2, per=60), Rate(5, per=3600))
        store.decide(algorithm, key, rates, 2, now=T0)
        store.decide(algorithm, "other-" + key, rates, 2, now=T0)
        other = "fixed-window" if algorithm != "fixed-window" else "gcra"
        store.decide(other, key, rates, 2, now=T0)
        assert not store.decide(algorithm, key, rates, 1, now=T0).allowed
        store.reset(algorithm, key, rates)
        again = store.decide(algorithm, key, rates, 1, now=T0 + 1)
        assert (again.allowed, again.remaining) == (True, 1)
        assert not store.decide(algorithm, "other-" + key, rates, 1, now=T0 + 1).allowed
        assert not store.decide(other, key, rates, 1, now=T0 + 1).allowed  # only this algorithm
        store.reset(algorithm, fresh_key(), rates)  # an unknown key: nothing to do

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_async_forms(self, astore, algorithm):
        key, rates = fresh_key(), (Rate(3, per=60),)
        reference = Reference()
        for offset, cost, consume in [(0, 2, True), (1, 2, False), (1, 1, True), (2, 1, True)]:
            got = await astore.adecide(
                algorithm, key, rates, cost, consume=consume, now=T0 + offset
            )
            assert got == reference.decide(
                algorithm, key, rates, cost, consume=consume, now=T0 + offset
            )
        await astore.areset(algorithm, key, rates)
        assert (await astore.adecide(algorithm, key, rates, 3, now=T0 + 3)).allowed


EXACT_LIMITS = st.sampled_from([1, 2, 4, 8, 16])
EXACT_PERIODS = st.sampled_from([4.0, 8.0, 16.0, 32.0])
ANY_LIMITS = st.integers(min_value=1, max_value=20)
ANY_PERIODS = st.sampled_from([3.0, 7.5, 10.0, 60.0, 3600.0])
GRID = 64

Action = tuple[str, float, int]


@st.composite
def scripts(draw: st.DrawFn) -> tuple[tuple[Rate, ...], list[Action]]:
    """Rates and a sorted list of hits, peeks and resets on the 1/64 s grid."""
    exact = draw(st.booleans())
    limits, periods = (EXACT_LIMITS, EXACT_PERIODS) if exact else (ANY_LIMITS, ANY_PERIODS)
    rates = tuple(Rate(draw(limits), per=draw(periods)) for _ in range(draw(st.integers(1, 3))))
    smallest = min(rate.limit for rate in rates)
    ticks = int(min(rate.period for rate in rates) * GRID)
    gaps = st.one_of(st.just(0), st.integers(0, 16), st.integers(0, 2 * ticks))
    kinds = st.sampled_from(["hit"] * 8 + ["peek"] * 2 + ["reset"])
    steps = draw(
        st.lists(st.tuples(kinds, gaps, st.integers(1, smallest)), min_size=1, max_size=30)
    )
    offset, actions = draw(st.integers(0, ticks)) / GRID, []
    for kind, gap, cost in steps:
        offset += gap / GRID
        actions.append((kind, offset, cost))
    return rates, actions


class TestRandomHistories:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(script=scripts())
    def test_store_matches_the_reference(self, store, algorithm, script):
        rates, actions = script
        key, reference = fresh_key(algorithm), Reference()
        for number, (kind, offset, cost) in enumerate(actions):
            if kind == "reset":
                store.reset(algorithm, key, rates)
                reference.reset(algorithm, key, rates)
                continue
            now, consume = T0 + offset, kind == "hit"
            got = store.decide(algorithm, key, rates, cost, consume=consume, now=now)
            want = reference.decide(algorithm, key, rates, cost, consume=consume, now=now)
            assert got == want, f"action {number}: {kind} +{offset} cost {cost}"


class TestLeases:
    def test_at_most_limit_live_leases(self, store, store_time):
        key, base = fresh_key("leases"), store_time()
        assert store.acquire_lease(key, 2, "a", 30.0, now=base)
        assert store.acquire_lease(key, 2, "b", 30.0, now=base + 1)
        assert not store.acquire_lease(key, 2, "c", 30.0, now=base + 2)
        assert store.count_leases(key, now=base + 2) == 2
        assert store.acquire_lease(key, 2, "a", 30.0, now=base + 3)  # a live id keeps its slot
        assert store.count_leases(key, now=base + 3) == 2
        assert store.count_leases(fresh_key("none"), now=base) == 0

    def test_expiry_renewal_and_release(self, store, store_time):
        key, base = fresh_key("leases"), store_time()
        store.acquire_lease(key, 2, "a", 30.0, now=base)
        store.acquire_lease(key, 2, "b", 30.0, now=base + 10)
        assert store.renew_lease(key, "a", 30.0, now=base + 20)  # a now lives until +50
        assert store.count_leases(key, now=base + 39.999) == 2
        assert store.count_leases(key, now=base + 40) == 1  # b expired at +40
        assert not store.renew_lease(key, "b", 30.0, now=base + 40)
        assert store.acquire_lease(key, 2, "c", 30.0, now=base + 41)  # b's slot is free again
        assert not store.acquire_lease(key, 2, "d", 30.0, now=base + 41)
        # release_lease runs on the store's own clock, a little after `base`: a is live.
        assert store.release_lease(key, "a")
        assert not store.release_lease(key, "a")
        assert not store.release_lease(key, "never-held")
        assert store.acquire_lease(key, 2, "d", 30.0, now=base + 42)
        assert not store.renew_lease(key, "unknown", 30.0, now=base + 42)
        assert not store.release_lease(fresh_key("none"), "a")

    def test_release_of_an_expired_lease_is_false(self, store, store_time):
        # release_lease: "False if it was not held (expired, or released before)", on the
        # store's own clock, even when nothing else touched the key since the lease expired.
        key = fresh_key("leases")
        assert store.acquire_lease(key, 1, "old", 10.0, now=store_time() - 100)
        assert not store.release_lease(key, "old")
        assert store.count_leases(key, now=store_time()) == 0

    async def test_async_forms(self, astore, store_time):
        key, base = fresh_key("leases"), store_time()
        assert await astore.aacquire_lease(key, 1, "a", 30.0, now=base)
        assert not await astore.aacquire_lease(key, 1, "b", 30.0, now=base)
        assert await astore.arenew_lease(key, "a", 30.0, now=base + 20)
        assert astore.count_leases(key, now=base + 45) == 1
        assert await astore.arelease_lease(key, "a")
        assert not await astore.arelease_lease(key, "a")
        assert await astore.aacquire_lease(key, 1, "b", 30.0, now=base + 46)
