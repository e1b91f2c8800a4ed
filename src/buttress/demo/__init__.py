"""The scenarios behind ``buttress demo``: an outage, live, and the chapter's examples.

``buttress demo`` runs the outage scenario (:mod:`buttress.demo.outage`: two clients of a flaky
service, naive and protected, side by side); ``buttress demo NAME...`` runs the named ones, e.g.
the chapter's ``retry``, ``breaker`` and ``throttling``, and ``buttress demo chapter`` those three.
Each chapter scenario is a module here with a ``main(seed)`` function; the ``examples/`` folder
of the repository links to the same files.
"""

from __future__ import annotations

from collections.abc import Callable

from buttress.demo import circuit_breaker, retry_database_connection, throttling_flaskapp

__all__ = ["CHAPTER", "DEMOS", "run"]

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
"""The chapter's scenarios: name -> (what it shows, its ``main(seed)``)."""

CHAPTER = tuple(DEMOS)


def run(names: list[str], seed: int) -> None:
    """Run the chapter's named scenarios (all three if ``names`` is empty), one after another.

    Raises:
        KeyError: If a name is not a scenario.
    """
    for name in names or list(DEMOS):
        title, main = DEMOS[name]
        print(f"=== buttress demo {name}: {title} ===")
        main(seed)
        print()
