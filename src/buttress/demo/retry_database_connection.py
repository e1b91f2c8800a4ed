"""The chapter's retry example, written with buttress: a flaky database connection.

The book's version wraps ``connect_to_database()`` in a home-made decorator that tries three times,
sleeps one second between tries, logs each try, and turns the last error into the string
``"Failure after all attempts"``. With buttress the decorator is one line, the waits back off with
jitter, each retry is logged by the library, and when the retries run out the caller gets the real
exception (with a note saying how many attempts were made) instead of a string.

Run it with ``python examples/retry_database_connection.py`` or ``buttress demo retry``. The random
failures and the jitter are seeded, so every run makes the same attempts and the same waits.
"""

from __future__ import annotations

import logging
import random
import sys
from dataclasses import dataclass, field

from buttress import Event, RetryGaveUp, RetrySucceeded, WaitExponential, retry


@dataclass
class Outcome:
    """What the run did, gathered from the retry policy's events."""

    attempts_per_call: list[int] = field(default_factory=list)
    succeeded: list[bool] = field(default_factory=list)
    waited: float = 0.0

    def __call__(self, event: Event) -> None:
        """Listen to the policy's events (a listener is any callable taking one event)."""
        if isinstance(event, (RetrySucceeded, RetryGaveUp)):
            self.attempts_per_call.append(event.attempt)
            self.succeeded.append(isinstance(event, RetrySucceeded))
            self.waited += event.waited


def run(seed: int = 9, calls: int = 5) -> Outcome:
    """Connect ``calls`` times to a database that fails half of the time; return what happened."""
    rng = random.Random(seed)
    outcome = Outcome()

    @retry(
        attempts=3,
        on=ConnectionError,
        wait=WaitExponential(initial=0.05, max=0.4, jitter="full", rng=rng.random),
        name="database",
        listeners=[outcome],
    )
    def connect_to_database() -> str:
        if rng.randint(0, 1):
            raise ConnectionError("Temporary Database Error")
        return "Connected to Database"

    for number in range(1, calls + 1):
        logging.info("Connection attempt #%d", number)
        try:
            print(f"--> {connect_to_database()}")
        except ConnectionError as error:
            notes = " ".join(getattr(error, "__notes__", ()))
            print(f"--> Failure after all attempts: {error} [{notes}]")
    return outcome


def explain(outcome: Outcome) -> str:
    """Say in plain words what happened in a run."""
    calls = len(outcome.succeeded)
    ok = sum(outcome.succeeded)
    pairs = zip(outcome.attempts_per_call, outcome.succeeded, strict=True)
    at_once = sum(1 for attempts, ok_ in pairs if ok_ and attempts == 1)
    retried_ok = ok - at_once
    failed = calls - ok
    retries = sum(outcome.attempts_per_call) - calls
    lines = [
        f"What happened: {calls} connections were requested from a database that fails half of "
        "the time.",
        f"  {at_once} connected at the first try and {retried_ok} more after retrying.",
    ]
    if failed:
        lines.append(
            f"  {failed} failed all 3 attempts: the caller got the real ConnectionError (not a "
            "string), with a note saying how many attempts were made and for how long."
        )
    lines += [
        f"  buttress retried {retries} times and waited {outcome.waited:.2f} s in total between "
        "attempts (exponential backoff with full jitter, seeded).",
        f"  Without retries, {calls - at_once} of the {calls} calls would have failed; with "
        f"them, {failed} did.",
    ]
    return "\n".join(lines)


def main(seed: int = 9) -> None:
    """Run the example with logging on, as the chapter does, and explain the outcome."""
    # On stdout, so the log lines and the printed results stay in order.
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s", stream=sys.stdout
    )
    outcome = run(seed)
    print()
    print(explain(outcome))


if __name__ == "__main__":
    main()
