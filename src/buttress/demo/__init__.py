"""The scenarios behind ``buttress demo``: the chapter's examples, runnable and explained.

``buttress demo NAME`` runs one; ``buttress demo`` runs them all. Each scenario is a module here
with a ``main(seed)`` function; the ``examples/`` folder of the repository links to the same files.
"""

from __future__ import annotations

from collections.abc import Callable

from buttress.demo import circuit_breaker, retry_database_connection, throttling_flaskapp

__all__ = ["DEMOS", "run"]

DEMOS: dict[str, tuple[str, Callable[[int], None]]] = {
    "retry": (
        "the chapter's flaky database connection, retried three times",
        retry_database_connection.main,
    ),
    "breaker": (
        "the chapter's fragile function behind a circuit breaker (fail_max=2), shortened",
        circuit_breaker.main,
    ),
    "throttling": (
        "the chapter's Flask app with Flask-Limiter's API (10/hour, 2/minute), served and queried",
        throttling_flaskapp.main,
    ),
}
"""Scenario name -> (what it shows, its ``main(seed)``)."""


def run(names: list[str], seed: int) -> None:
    """Run the named scenarios (all of them if ``names`` is empty), one after another.

    Raises:
        KeyError: If a name is not a scenario.
    """
    for name in names or list(DEMOS):
        title, main = DEMOS[name]
        print(f"=== buttress demo {name}: {title} ===")
        main(seed)
        print()
