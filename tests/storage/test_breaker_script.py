"""The shared circuit breaker's Redis script (``storage/lua/breaker.lua``) on the real server.

A hypothesis test drives the script and the in-process :class:`Machine` (the reference) side by
side, with the same explicit times, and compares every reply with the machine: state,
generation, failures in a row, window totals, the open period left, admissions and reasons. The
other tests pin what the machine has no counterpart for: batches of outcomes written by ``sync``,
leased trial permits, the keys and their TTLs, argument checks and the asyncio twin.

Every script call gets an explicit ``now`` (starting at :data:`BASE`); the keys' TTLs are relative
to the server's real clock, and are far longer than a test takes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from buttress.breaker import CircuitBreaker
from buttress.breaker._machine import DISABLED, HALF_OPEN, OPEN, Machine, Rules, Transition
from buttress.breaker._shared import LETTERS, STATES, rule_arguments
from buttress.storage import BreakerReply
from buttress.storage.redis import RedisStorage

BASE = 1_000_000.0
KEEP = 86_400.0
LONG_LEASE = 1e7  # the differential test's permits never lapse: the machine has no leases
FORCE_REASONS = {
    "o": "opened by hand",
    "c": "closed by hand",
    "h": "half-opened by hand",
    "f": "forced open by hand",
    "d": "disabled by hand",
}
# One call's outcome as a sync batch: successes, failures, slow successes, slow failures,
# failures since the last success, whether there was a success.
ONE_OUTCOME = {
    "s": (1, 0, 0, 0, 0, 1),
    "f": (0, 1, 0, 0, 1, 0),
    "S": (0, 0, 1, 0, 0, 1),
    "F": (0, 0, 0, 1, 1, 0),
}


# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    """A prefix for one test, under the run's prefix (so the run's clean-up deletes its keys)."""
    return f"{redis_prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(redis_url: str, prefix: str) -> Iterator[RedisStorage]:
    store = RedisStorage.from_url(redis_url, prefix=prefix, timeout=5.0)
    yield store
    store.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def make_rules(**options: Any) -> Rules:
    return CircuitBreaker("rules", registry=None, **options).rules


def keys_of(raw: redis.Redis, prefix: str) -> list[str]:
    return sorted(raw.scan_iter(match=f"{{{prefix}*", count=1000))


def key_names(prefix: str, name: str) -> tuple[str, str, str]:
    tag = f"{{{prefix}:breaker:{name}}}"
    return (f"{tag}:state", f"{tag}:window", f"{tag}:trials")


def batch(
    generation: int,
    s: int = 0,
    f: int = 0,
    ss: int = 0,
    sf: int = 0,
    trailing: int = 0,
    any_success: bool = False,
) -> tuple[str, ...]:
    """The arguments of a ``sync``."""
    return (str(generation), str(s), str(f), str(ss), str(sf), str(trailing), str(int(any_success)))


class Breaker:
    """One breaker name on a store, with its rules, at an explicit time."""

    def __init__(self, store: RedisStorage, rules: Rules, keep: float = KEEP) -> None:
        self.store = store
        self.name = f"b-{uuid.uuid4().hex}"
        self.rules = rule_arguments(rules, keep)
        self.now = BASE

    def __call__(self, operation: str, *arguments: str) -> BreakerReply:
        return self.store.breaker(self.name, operation, self.rules, arguments, now=self.now)

    def sync(self, generation: int, **counts: Any) -> BreakerReply:
        return self("sync", *batch(generation, **counts))


# -- the script against the machine -------------------------------------------------------------

RATES = st.sampled_from([0.25, 0.34, 0.4, 0.5, 0.6, 0.75, 1.0])
# (window seconds, buckets): widths that are exact binary fractions and widths that are not (the
# script floors like Python's `now // width`, so both put a time in the same bucket).
TIME_WINDOWS = st.sampled_from(
    [(2.0, 1), (2.0, 2), (3.0, 4), (4.0, 4), (6.0, 3), (10.0, 4), (1.0, 10), (3.0, 7), (0.3, 3)]
)
ADVANCES = st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 2.5, 7.0, 31.0, 120.0, 400.0])
STEPS = st.sampled_from(["call"] * 5 + ["trial"] * 2 + ["done"] * 2 + ["force", "read"])
HALF_OPEN_STEPS = st.sampled_from(["trial"] * 3 + ["done"] * 4 + ["call", "force", "read"])


@st.composite
def breaker_options(draw: st.DrawFn) -> dict[str, Any]:
    """CircuitBreaker arguments: fail_max alone, a rate over a count window, or over a time one."""
    kind = draw(st.sampled_from(["fail_max", "count", "time"]))
    options: dict[str, Any] = {}
    if kind == "fail_max":
        options["fail_max"] = draw(st.integers(1, 4))
    elif kind == "count":
        size = draw(st.integers(3, 6))
        options.update(
            window_type="count",
            window_size=size,
            min_calls=draw(st.integers(1, size)),
            failure_rate=draw(RATES),
        )
        if draw(st.booleans()):
            options["fail_max"] = draw(st.integers(2, 5))
        if draw(st.booleans()):
            options.update(slow_call_rate=draw(RATES), slow_call_duration=1.0)
    else:
        window, buckets = draw(TIME_WINDOWS)
        options.update(
            window_type="time",
            window_size=window,
            window_buckets=buckets,
            min_calls=draw(st.integers(1, 6)),
            failure_rate=draw(RATES),
            slow_call_rate=draw(RATES),
            slow_call_duration=1.0,
        )
    timeout = draw(st.sampled_from([1.0, 5.0, 30.0]))
    options.update(
        reset_timeout=timeout,
        reset_timeout_multiplier=draw(st.sampled_from([1.0, 1.5, 2.0, 3.0])),
        reset_timeout_max=timeout * draw(st.sampled_from([1, 2, 5, 10])),
        half_open_max_calls=draw(st.integers(1, 3)),
        success_threshold=draw(st.integers(1, 3)),
    )
    return options


class Twin:
    """The script and the machine, driven by the same steps at the same times."""

    def __init__(self, store: RedisStorage, rules: Rules) -> None:
        self.breaker = Breaker(store, rules)
        self.machine = Machine(rules, lambda: self.now)
        self.permits: list[tuple[str, int, float]] = []  # taken, not done: (id, generation, end)
        self.serial = 0
        self.steps: list[str] = []  # for the failure message
        self.seen: set[str] = set()  # what the example went through (hypothesis statistics)

    @property
    def now(self) -> float:
        return self.breaker.now

    def call(self, kind: str, generation: int) -> None:
        """A plain call's outcome, written by ``sync`` (a stale generation is dropped)."""
        s, f, ss, sf, trailing, any_success = ONE_OUTCOME[kind]
        reply = self.breaker.sync(
            generation, s=s, f=f, ss=ss, sf=sf, trailing=trailing, any_success=bool(any_success)
        )
        transition = self.machine.record(generation, kind in "fF", kind in "SF", self.now)
        self.check(f"call {kind} gen {generation}", reply, transition)

    def trial(self) -> None:
        permit = f"permit-{self.serial}"
        self.serial += 1
        reply = self.breaker("trial", permit, repr(LONG_LEASE))
        generation, transition = self.machine.acquire(self.now)
        state = self.machine.state
        if generation != -1 and state is HALF_OPEN:
            self.permits.append((permit, generation, self.now + LONG_LEASE))
        self.check(f"trial {permit}", reply, transition)
        context = "\n".join(self.steps)
        if generation == -1:
            assert reply.granted == 0, context
            if state is HALF_OPEN:  # refused: all permits taken, until the first one lapses
                live = [end for _, gen, end in self.permits if gen == self.machine.generation]
                assert len(live) == self.rules.half_open_max_calls, context
                assert reply.trial_wait == pytest.approx(min(live) - self.now), context
                self.seen.add("a trial refused in half-open")
                return
        else:
            assert reply.granted == (1 if state is HALF_OPEN else 2), context
        assert reply.trial_wait == 0, context

    def done(self, index: int, outcome: str) -> None:
        permit, generation, _ = self.permits.pop(index)
        reply = self.breaker("done", str(generation), permit, outcome)
        transition = None
        if outcome == "i":
            self.machine.release(generation)
        else:
            transition = self.machine.record(generation, outcome == "f", False, self.now)
        self.check(f"done {permit} gen {generation} {outcome}", reply, transition)

    def force(self, letter: str) -> None:
        reply = self.breaker("force", letter)
        transition = self.machine.force(STATES[letter], FORCE_REASONS[letter], self.now)
        self.check(f"force {letter}", reply, transition)

    def read(self) -> None:
        self.check("read", self.breaker("read"), None)

    @property
    def rules(self) -> Rules:
        return self.machine.rules

    def check(self, step: str, reply: BreakerReply, transition: Transition | None) -> None:
        machine, now = self.machine, self.now
        self.steps.append(f"{now - BASE:g}: {step} -> {reply}")
        context = "\n".join(self.steps)
        self.seen.add(f"state {machine.state}")
        if reply.reason:
            self.seen.add(f"reason: {re.sub(r'[0-9]+', 'N', reply.reason)}")
        assert STATES[reply.state] is machine.state, context
        assert reply.state == LETTERS[machine.state], context
        assert reply.generation == machine.generation, context
        assert reply.consecutive == machine.consecutive, context
        assert_same_reason(reply.reason, transition, context)
        if machine.windowed or machine.state is DISABLED:
            totals = machine.totals(now)
            got = (reply.calls, reply.failures, reply.slow)
            assert got == (totals.calls, totals.failures, totals.slow), context
        else:
            assert (reply.calls, reply.failures, reply.slow) == (0, 0, 0), context
        if machine.state is OPEN:
            assert reply.open_for == pytest.approx(machine.open_until - now, abs=1e-6), context
            if transition is not None and transition.new is OPEN:  # the period it just started
                assert reply.open_for == pytest.approx(transition.open_for, abs=1e-6), context
        else:
            assert reply.open_for == 0, context
        # The machine's own bookkeeping agrees with the permits this test holds.
        if machine.state is HALF_OPEN:
            live = [p for p, gen, _ in self.permits if gen == machine.generation]
            assert machine.in_flight == len(live), context


PERCENT = re.compile(r"(\d+)%")


def assert_same_reason(got: str, transition: Transition | None, context: str) -> None:
    """The script's reason is the machine's, word for word (5/8 is ``62%`` in both)."""
    want = transition.reason if transition is not None else ""
    assert got == want, context


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(options=breaker_options(), data=st.data())
def test_the_script_follows_the_machine(store, options, data):
    twin = Twin(store, make_rules(**options))
    for _ in range(data.draw(st.integers(5, 60), label="steps")):
        twin.breaker.now += data.draw(ADVANCES, label="advance")
        machine = twin.machine
        step = data.draw(HALF_OPEN_STEPS if machine.state is HALF_OPEN else STEPS, label="step")
        if step == "call":
            kind = data.draw(st.sampled_from("ffFsS"), label="outcome")
            generation = machine.generation
            # A stale generation now and then; always in HALF_OPEN, where the protocol sends
            # no plain outcomes (the machine would take one for a trial's).
            if machine.state is HALF_OPEN or data.draw(st.integers(0, 4), label="stale") == 0:
                current = machine.generation
                other = data.draw(st.integers(0, current + 1), label="stale generation")
                generation = other + (other >= current)  # any but the current one
            twin.call(kind, generation)
        elif step == "trial":
            twin.trial()
        elif step == "done" and twin.permits:
            index = data.draw(st.integers(0, len(twin.permits) - 1), label="permit")
            twin.done(index, data.draw(st.sampled_from("sssffi"), label="trial outcome"))
        elif step == "force":
            twin.force(data.draw(st.sampled_from("ochfd"), label="force"))
        else:
            twin.read()
    for seen in sorted(twin.seen):
        event(seen)


def test_the_twin_catches_a_diverging_machine(store):
    # The comparison is not vacuous: a machine with other rules than the script's is caught.
    twin = Twin(store, make_rules(fail_max=2))
    twin.machine = Machine(make_rules(fail_max=3), lambda: twin.now)
    twin.call("f", 0)
    with pytest.raises(AssertionError):
        twin.call("f", 0)


# -- sync: batches of outcomes ------------------------------------------------------------------

# Trips only on a window of 5 calls that all failed, or were all slow.
RING_RULES = {
    "failure_rate": 1.0,
    "slow_call_rate": 1.0,
    "slow_call_duration": 1.0,
    "window_size": 5,
    "min_calls": 5,
}


def ring_of(raw: redis.Redis, prefix: str, name: str) -> tuple[str, int]:
    """The count window's raw ring and its next slot."""
    state, window, _ = key_names(prefix, name)
    ring = cast("str | None", raw.get(window))
    return ring or "", int(cast("str | None", raw.hget(state, "pos")) or 0)


def totals_of(reply: BreakerReply) -> tuple[int, int, int]:
    return (reply.calls, reply.failures, reply.slow)


class TestSyncBatches:
    def test_a_batch_is_recorded_as_one(self, store, raw, prefix):
        breaker = Breaker(store, make_rules(**RING_RULES))
        reply = breaker.sync(0, s=2, f=1, ss=1, trailing=1, any_success=True)
        # Slow successes, successes, slow failures, failures: in that order.
        assert ring_of(raw, prefix, breaker.name) == ("Sssf", 4)
        assert (reply.state, reply.generation, reply.reason) == ("c", 0, "")
        assert totals_of(reply) == (4, 1, 1)
        assert reply.consecutive == 1  # `trailing`, since the batch had a success

        # No success in the batch: its failures add to those in a row. It wraps around the ring.
        reply = breaker.sync(0, f=2, sf=1, trailing=3)
        assert ring_of(raw, prefix, breaker.name) == ("ffsfF", 2)
        assert totals_of(reply) == (5, 4, 1)  # s f F f f
        assert reply.consecutive == 1 + 3
        assert reply.state == "c"

        reply = breaker.sync(0, f=1, ss=1, trailing=1, any_success=True)
        assert ring_of(raw, prefix, breaker.name) == ("ffSfF", 4)
        assert totals_of(reply) == (5, 4, 2)  # F f f S f
        assert reply.consecutive == 1
        assert breaker("read") == reply

    def test_trailing_and_any_success_set_the_failures_in_a_row(self, store):
        breaker = Breaker(store, make_rules(fail_max=4))
        assert breaker.sync(0, f=3, trailing=3).consecutive == 3
        # A success in the batch: the failures after it are those in a row.
        assert breaker.sync(0, s=1, f=2, trailing=2, any_success=True).consecutive == 2
        assert breaker.sync(0, s=2, any_success=True).consecutive == 0
        assert breaker.sync(0, f=1, trailing=1).consecutive == 1
        assert breaker.sync(0, f=2, trailing=2).consecutive == 3
        reply = breaker.sync(0, sf=1, trailing=1)
        assert (reply.state, reply.generation, reply.reason) == ("o", 1, "4 failures in a row")
        assert reply.consecutive == 0
        assert reply.open_for == 30.0

    def test_a_batch_larger_than_the_window_keeps_its_last_outcomes(self, store, raw, prefix):
        breaker = Breaker(store, make_rules(**RING_RULES))
        breaker.sync(0, s=3, any_success=True)
        assert ring_of(raw, prefix, breaker.name) == ("sss", 3)
        # S S s s s s f f f: the last five are s s f f f; the slow successes are gone.
        reply = breaker.sync(0, s=4, f=3, ss=2, trailing=3, any_success=True)
        assert ring_of(raw, prefix, breaker.name) == ("fffss", 3)
        assert totals_of(reply) == (5, 3, 0)
        assert reply.state == "c"

        # Seven failures: the window is five failures, which trips the failure rate.
        reply = breaker.sync(0, f=7, trailing=7)
        assert (reply.state, reply.generation) == ("o", 1)
        assert reply.reason == "failure rate 100% >= 100% over 5 calls"
        assert totals_of(reply) == (0, 0, 0)
        assert ring_of(raw, prefix, breaker.name) == ("", 0)  # cleared on the trip

    def test_outcomes_of_a_stale_generation_are_dropped(self, store, raw, prefix):
        breaker = Breaker(store, make_rules(failure_rate=0.5, window_size=5, min_calls=5))
        reply = breaker.sync(1, f=2, trailing=2)
        assert (reply.generation, reply.consecutive, totals_of(reply)) == (0, 0, (0, 0, 0))
        assert keys_of(raw, prefix) == []  # nothing was written
        assert breaker("force", "o").generation == 1
        # Open: outcomes of the current generation are dropped too (calls admitted before...).
        assert totals_of(breaker.sync(1, s=1, f=1, trailing=1, any_success=True)) == (0, 0, 0)
        assert breaker("force", "c").generation == 2
        for stale in (0, 1, 3):
            reply = breaker.sync(stale, f=1, trailing=1)
            assert (reply.consecutive, totals_of(reply)) == (0, (0, 0, 0))
        reply = breaker.sync(2, s=1, f=1, trailing=1, any_success=True)
        assert (reply.consecutive, totals_of(reply)) == (1, (2, 1, 0))

    def test_disabled_records_without_tripping(self, store):
        breaker = Breaker(store, make_rules(fail_max=1, window_size=5))
        reply = breaker("force", "d")
        assert (reply.state, reply.generation, reply.reason) == ("d", 1, "disabled by hand")
        reply = breaker.sync(1, f=4, ss=2, trailing=4, any_success=True)
        # Not windowed (fail_max alone) but disabled: the window is kept, for the metrics.
        assert (reply.state, totals_of(reply), reply.consecutive) == ("d", (5, 4, 1), 0)
        reply = breaker("force", "c")
        assert (reply.state, totals_of(reply)) == ("c", (0, 0, 0))

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        batches=st.lists(
            st.tuples(*[st.integers(0, 4)] * 4).filter(any),
            min_size=1,
            max_size=12,
        )
    )
    def test_the_ring_holds_the_last_five_outcomes(self, store, raw, prefix, batches):
        breaker = Breaker(store, make_rules(**RING_RULES))
        generation, outcomes = 0, ""
        for s, f, ss, sf in batches:
            reply = breaker.sync(
                generation, s=s, f=f, ss=ss, sf=sf, trailing=f + sf, any_success=bool(s + ss)
            )
            outcomes += "S" * ss + "s" * s + "F" * sf + "f" * f
            last = outcomes[-5:]
            failures = sum(outcome in "fF" for outcome in last)
            slow = sum(outcome in "SF" for outcome in last)
            if 5 in (failures, slow):  # a rate of 100% over 5 calls
                assert (reply.state, reply.generation) == ("o", generation + 1), outcomes
                assert ring_of(raw, prefix, breaker.name) == ("", 0)
                generation = breaker("force", "c").generation
                outcomes = ""
                continue
            assert (reply.state, reply.generation) == ("c", generation), outcomes
            assert totals_of(reply) == (len(last), failures, slow), outcomes
            ring, pos = ring_of(raw, prefix, breaker.name)
            if len(outcomes) < 5:
                assert (ring, pos) == (outcomes, len(outcomes))
            else:  # the oldest call is in the next slot to write
                assert len(ring) == 5
                assert ring[pos:] + ring[:pos] == last, (ring, pos, outcomes)


# -- trial permits --------------------------------------------------------------------------------

LEASE = "30.0"


def trial_rules(**options: Any) -> Rules:
    defaults: dict[str, Any] = {
        "fail_max": 1,
        "reset_timeout": 10.0,
        "reset_timeout_multiplier": 2.0,
        "reset_timeout_max": 50.0,
        "half_open_max_calls": 2,
        "success_threshold": 2,
    }
    return make_rules(**{**defaults, **options})


def tripped(store: RedisStorage, rules: Rules) -> Breaker:
    """A breaker opened at BASE (generation 1) for 10 s, the clock at the end of that period."""
    breaker = Breaker(store, rules)
    reply = breaker.sync(0, f=1, trailing=1)
    assert (reply.state, reply.generation, reply.open_for) == ("o", 1, 10.0)
    breaker.now += 10.0
    return breaker


def hs_of(raw: redis.Redis, prefix: str, name: str) -> int:
    return int(cast("str | None", raw.hget(key_names(prefix, name)[0], "hs")) or 0)


class TestTrialPermits:
    def test_no_trial_before_the_open_period_ends(self, store):
        breaker = tripped(store, trial_rules())
        breaker.now -= 4.0
        reply = breaker("trial", "p1", LEASE)
        assert (reply.state, reply.generation, reply.granted) == ("o", 1, 0)
        assert reply.open_for == pytest.approx(4.0)
        assert (reply.trial_wait, reply.reason) == (0.0, "")

    @pytest.mark.parametrize("most", [1, 2, 3])
    def test_exactly_half_open_max_calls_permits(self, store, raw, prefix, most):
        breaker = tripped(store, trial_rules(half_open_max_calls=most))
        start = breaker.now
        reply = breaker("trial", "p0", LEASE)
        assert (reply.state, reply.generation, reply.granted) == ("h", 2, 1)
        assert reply.reason == "the reset timeout passed"
        for number in range(1, most):
            breaker.now += 0.5
            reply = breaker("trial", f"p{number}", LEASE)
            assert (reply.state, reply.generation, reply.granted, reply.reason) == ("h", 2, 1, "")
        for _ in range(2):
            breaker.now += 1.25
            reply = breaker("trial", "refused", LEASE)
            assert (reply.state, reply.generation, reply.granted) == ("h", 2, 0)
            # Until the first permit (taken at `start`) lapses.
            assert reply.trial_wait == pytest.approx(start + 30.0 - breaker.now)
        trials = key_names(prefix, breaker.name)[2]
        assert sorted(raw.zrange(trials, 0, -1)) == sorted(f"p{n}" for n in range(most))

    @pytest.mark.parametrize("outcome", ["s", "f"])
    def test_a_lapsed_permit_frees_its_slot_and_counts_nothing(self, store, raw, prefix, outcome):
        breaker = tripped(store, trial_rules())
        start = breaker.now
        assert breaker("trial", "p1", LEASE).granted == 1  # until start + 30
        breaker.now += 1.0
        assert breaker("trial", "p2", LEASE).granted == 1  # until start + 31
        breaker.now = start + 30.5
        reply = breaker("trial", "p3", LEASE)  # p1 lapsed: its slot is free
        assert (reply.state, reply.generation, reply.granted) == ("h", 2, 1)
        reply = breaker("trial", "p4", LEASE)
        assert reply.granted == 0
        assert reply.trial_wait == pytest.approx(0.5)  # p2 lapses next
        reply = breaker("done", "2", "p1", outcome)  # lapsed: neither a success nor a failure
        assert (reply.state, reply.generation, reply.reason) == ("h", 2, "")
        assert hs_of(raw, prefix, breaker.name) == 0
        reply = breaker("done", "2", "p3", "s")
        assert (reply.state, reply.generation, reply.reason) == ("h", 2, "")
        assert hs_of(raw, prefix, breaker.name) == 1
        reply = breaker("done", "2", "p2", "s")
        assert (reply.state, reply.generation) == ("c", 3)
        assert reply.reason == "2 trial call(s) succeeded"

    @pytest.mark.parametrize("outcome", ["s", "f"])
    def test_a_lapsed_permit_counts_nothing_before_any_trial_sweeps_it(self, store, outcome):
        breaker = tripped(store, trial_rules(success_threshold=1))
        start = breaker.now
        assert breaker("trial", "p1", LEASE).granted == 1  # until start + 30
        assert breaker("trial", "p2", "60.0").granted == 1  # until start + 60
        breaker.now = start + 45.0  # p1 lapsed 15 s ago; no trial since
        reply = breaker("done", "2", "p1", outcome)
        assert (reply.state, reply.generation, reply.reason) == ("h", 2, "")

    def test_success_threshold_successes_close(self, store, raw, prefix):
        breaker = tripped(store, trial_rules(half_open_max_calls=3, success_threshold=3))
        for permit in ("p1", "p2", "p3"):
            assert breaker("trial", permit, LEASE).granted == 1
        for count, permit in enumerate(("p1", "p2"), start=1):
            breaker.now += 1.0
            reply = breaker("done", "2", permit, "s")
            assert (reply.state, reply.generation, reply.reason) == ("h", 2, "")
            assert hs_of(raw, prefix, breaker.name) == count
        reply = breaker("done", "2", "p1", "s")  # done already: counts nothing
        assert (reply.state, hs_of(raw, prefix, breaker.name)) == ("h", 2)
        reply = breaker("done", "2", "p3", "s")
        assert (reply.state, reply.generation) == ("c", 3)
        assert reply.reason == "3 trial call(s) succeeded"
        assert raw.exists(key_names(prefix, breaker.name)[2]) == 0  # the permits are gone
        # Closed again: trips start over, the open period is the first one again.
        reply = breaker.sync(3, f=1, trailing=1)
        assert (reply.state, reply.generation, reply.open_for) == ("o", 4, 10.0)

    def test_one_failure_reopens_with_the_grown_period(self, store):
        breaker = tripped(store, trial_rules(success_threshold=3))
        generation = 1
        for period in (20.0, 40.0, 50.0, 50.0):  # doubled each trip in a row, up to the cap
            reply = breaker("trial", "first", LEASE)
            assert (reply.state, reply.generation, reply.granted) == ("h", generation + 1, 1)
            assert breaker("trial", "second", LEASE).granted == 1
            assert breaker("done", str(generation + 1), "second", "s").state == "h"
            breaker.now += 0.5
            reply = breaker("done", str(generation + 1), "first", "f")
            assert (reply.state, reply.generation) == ("o", generation + 2)
            assert reply.reason == "a trial call failed"
            assert reply.open_for == period
            generation += 2
            breaker.now += period - 0.25
            reply = breaker("trial", "early", LEASE)
            assert (reply.state, reply.granted, reply.open_for) == ("o", 0, 0.25)
            breaker.now += 0.25

    def test_a_trial_of_an_earlier_half_open_counts_nothing(self, store):
        breaker = tripped(store, trial_rules(success_threshold=1))
        assert breaker("trial", "p1", LEASE).granted == 1
        assert breaker("trial", "p2", LEASE).granted == 1
        assert breaker("done", "2", "p1", "f").generation == 3  # reopened
        reply = breaker("done", "2", "p2", "s")
        assert (reply.state, reply.generation, reply.reason) == ("o", 3, "")
        breaker.now += 20.0
        assert breaker("trial", "p3", LEASE).generation == 4
        reply = breaker("done", "2", "p2", "s")  # the permit's generation is not this one
        assert (reply.state, reply.generation, reply.reason) == ("h", 4, "")

    def test_an_ignored_trial_frees_its_slot(self, store, raw, prefix):
        breaker = tripped(store, trial_rules(half_open_max_calls=1))
        assert breaker("trial", "p1", LEASE).granted == 1
        assert breaker("trial", "p2", LEASE).granted == 0
        reply = breaker("done", "2", "p1", "i")
        assert (reply.state, reply.generation, reply.reason) == ("h", 2, "")
        assert hs_of(raw, prefix, breaker.name) == 0
        assert breaker("trial", "p3", LEASE).granted == 1

    @pytest.mark.parametrize(("letter", "granted"), [("c", 2), ("d", 2), ("f", 0), ("o", 0)])
    def test_a_trial_outside_half_open(self, store, letter, granted):
        breaker = Breaker(store, trial_rules())
        breaker("force", letter)
        reply = breaker("trial", "p1", LEASE)
        assert (reply.state, reply.granted, reply.trial_wait) == (letter, granted, 0.0)


# -- keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "window",
    [
        {"window_type": "count", "window_size": 5, "min_calls": 5},
        {"window_type": "time", "window_size": 60.0, "min_calls": 5},
    ],
)
def test_the_keys_and_their_ttls(store, raw, prefix, window):
    keep = 600.0
    rules = make_rules(
        failure_rate=0.5, half_open_max_calls=2, success_threshold=1, reset_timeout=10.0, **window
    )
    breaker = Breaker(store, rules, keep=keep)
    state, window_key, trials = key_names(prefix, breaker.name)
    breaker("read")
    breaker.sync(1, s=1, any_success=True)  # a stale generation
    assert keys_of(raw, prefix) == []  # nothing to keep yet
    breaker.sync(0, s=2, f=1, trailing=1, any_success=True)
    assert keys_of(raw, prefix) == sorted([state, window_key])
    breaker("force", "h")  # the window stays
    breaker("trial", "p1", LEASE)
    assert keys_of(raw, prefix) == sorted([state, window_key, trials])
    for key in (state, window_key):
        assert keep * 1000 - 10_000 < raw.pttl(key) <= keep * 1000, key
    assert 25_000 < raw.pttl(trials) <= 30_001
    breaker("done", "1", "p1", "s")  # closes: window and permits cleared
    assert keys_of(raw, prefix) == [state]
    assert 0 < raw.pttl(state) <= keep * 1000
    assert raw.hget(state, "st") == "c"


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(options=breaker_options(), data=st.data())
def test_every_key_of_a_breaker_expires(store, raw, prefix, options, data):
    twin = Twin(store, make_rules(**options))
    for _ in range(data.draw(st.integers(1, 25), label="steps")):
        twin.breaker.now += data.draw(ADVANCES, label="advance")
        step = data.draw(st.sampled_from(["call", "trial", "done", "force"]), label="step")
        if step == "call" and twin.machine.state is not HALF_OPEN:
            twin.call(data.draw(st.sampled_from("fsS"), label="outcome"), twin.machine.generation)
        elif step == "trial":
            twin.trial()
        elif step == "done" and twin.permits:
            twin.done(0, data.draw(st.sampled_from("sfi"), label="trial outcome"))
        elif step == "force":
            twin.force(data.draw(st.sampled_from("ochfd"), label="force"))
    names = key_names(prefix, twin.breaker.name)
    found = [key for key in keys_of(raw, prefix) if twin.breaker.name in key]
    assert set(found) <= set(names)
    for key in found:
        limit = (LONG_LEASE if key == names[2] else KEEP) * 1000 + 1
        assert 0 < raw.pttl(key) <= limit, key


# -- bad arguments --------------------------------------------------------------------------------


def bad_calls(rules: tuple[str, ...]) -> list[tuple[type[Exception], str, tuple[Any, ...]]]:
    """(error, the argument it names, (name, operation, rules))."""
    return [
        (ValueError, "operation", ("b", "reset", rules)),
        (ValueError, "operation", ("b", "SYNC", rules)),
        (ValueError, "operation", ("b", "", rules)),
        (ValueError, "rules", ("b", "read", rules[:-1])),
        (ValueError, "rules", ("b", "read", (*rules, "1"))),
        (ValueError, "rules", ("b", "read", ())),
        (TypeError, "name", ("", "read", rules)),
        (TypeError, "name", (None, "read", rules)),
        (TypeError, "name", (42, "read", rules)),
        (TypeError, "name", (b"b", "read", rules)),
    ]


def test_bad_arguments_are_refused_before_any_round_trip(store, raw, prefix):
    rules = rule_arguments(make_rules(), KEEP)
    for error, argument, (name, operation, given_rules) in bad_calls(rules):
        with pytest.raises(error, match=rf"^{argument} must"):
            store.breaker(name, operation, given_rules, now=BASE)
    assert keys_of(raw, prefix) == []
    assert store.breaker("b", "read", rules, now=BASE).state == "c"  # the good one answers


async def test_bad_arguments_are_refused_by_the_coroutine(redis_url, raw, prefix):
    store = RedisStorage.from_url(redis_url, prefix=prefix, timeout=5.0)
    try:
        rules = rule_arguments(make_rules(), KEEP)
        for error, argument, (name, operation, given_rules) in bad_calls(rules):
            with pytest.raises(error, match=rf"^{argument} must"):
                await store.abreaker(name, operation, given_rules, now=BASE)
        assert keys_of(raw, prefix) == []
    finally:
        await store.aclose()


# -- asyncio ------------------------------------------------------------------------------------

# (seconds after BASE, operation, arguments, the state it leaves): trips by failures in a row and
# by a trial failure, a grown period, permits refused, lapsed and ignored, closing, forcing.
SCENARIO: list[tuple[float, str, tuple[str, ...], str]] = [
    (0.0, "sync", batch(0, s=1, f=1, trailing=1, any_success=True), "c"),
    (0.5, "sync", batch(0, f=1, trailing=1), "o"),
    (5.0, "trial", ("p1", "20.0"), "o"),
    (5.0, "read", (), "o"),
    (11.0, "trial", ("p1", "20.0"), "h"),
    (11.5, "trial", ("p2", "20.0"), "h"),
    (12.0, "trial", ("p3", "20.0"), "h"),
    (13.0, "done", ("2", "p1", "f"), "o"),
    (13.0, "done", ("2", "p2", "s"), "o"),
    (33.0, "trial", ("p4", "1.0"), "h"),
    (35.0, "trial", ("p5", "20.0"), "h"),
    (35.0, "done", ("4", "p4", "s"), "h"),
    (35.5, "trial", ("p6", "20.0"), "h"),
    (35.5, "done", ("4", "p6", "i"), "h"),
    (36.0, "done", ("4", "p5", "s"), "h"),
    (36.0, "trial", ("p7", "20.0"), "h"),
    (36.5, "done", ("4", "p7", "s"), "c"),
    (37.0, "sync", batch(5, s=2, f=2, trailing=1, any_success=True), "o"),
    (37.0, "force", ("d",), "d"),
    (37.5, "sync", batch(7, f=3, ss=1, trailing=3, any_success=True), "d"),
    (38.0, "force", ("f",), "f"),
    (38.0, "trial", ("p8", "20.0"), "f"),
    (39.0, "force", ("c",), "c"),
    (39.0, "read", (), "c"),
]


async def test_the_coroutine_answers_like_the_sync_method(redis_url, prefix):
    rules = rule_arguments(
        make_rules(
            fail_max=2,
            failure_rate=0.5,
            window_size=4,
            min_calls=4,
            reset_timeout=10.0,
            reset_timeout_multiplier=2.0,
            reset_timeout_max=40.0,
            half_open_max_calls=2,
            success_threshold=2,
        ),
        600.0,
    )
    store = RedisStorage.from_url(redis_url, prefix=prefix, timeout=5.0)
    sync_name, async_name = f"sync-{uuid.uuid4().hex}", f"async-{uuid.uuid4().hex}"
    try:
        for offset, operation, arguments, state in SCENARIO:
            now = BASE + offset
            want = store.breaker(sync_name, operation, rules, arguments, now=now)
            got = await store.abreaker(async_name, operation, rules, arguments, now=now)
            assert got == want, (offset, operation, arguments)
            assert got.state == state, (offset, operation, arguments, got)
    finally:
        await store.aclose()
