"""The chapter's throttling example, written with buttress: a Flask app with two limited routes.

The book limits a Flask app with Flask-Limiter::

    limiter = Limiter(
        get_remote_address,
        app=app,
        default_limits=["100 per day", "10 per hour"],
        storage_uri="memory://",
        strategy="fixed-window",
    )

``/limited`` has no limit of its own, so the default limits apply to it (per client address);
``/more_limited`` is decorated with ``@limiter.limit("2/minute")``, which replaces the defaults.
With buttress the code is the same; only the import changes, to
``from buttress.contrib.flask import Limiter, get_remote_address``.

``buttress demo throttling`` and ``python examples/throttling_flaskapp.py`` start the app on a
free loopback port with a real WSGI server (werkzeug's), send eleven requests to ``/limited`` and
three to ``/more_limited`` with urllib, print each status with its ``RateLimit-*`` headers and
``Retry-After``, explain where the 200s turn into 429s, and stop the server: about a second in
all. Nothing here is random; ``seed`` is accepted for the common demo signature only.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

DEFAULT_LIMITS = ["100 per day", "10 per hour"]
"""The chapter's default limits."""

MORE_LIMITED = "2/minute"
"""The chapter's limit of ``/more_limited``."""

REQUESTS = {"/limited": 11, "/more_limited": 3}
"""The requests the demo sends: one more than each route's tightest limit admits."""

_SHOWN = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After")
_INSTALL_HINT = "This demo needs Flask: pip install 'buttress[flask]'"


@dataclass(frozen=True)
class Answer:
    """One response the demo received.

    Attributes:
        path: The requested path.
        number: The request's number on its path (from 1).
        status: The HTTP status.
        headers: The rate limit headers received (names as sent).
    """

    path: str
    number: int
    status: int
    headers: dict[str, str]


def make_app() -> Flask:
    """The chapter's app; only the import differs from its Flask-Limiter version.

    Raises:
        ImportError: If Flask is not installed.
    """
    from flask import Flask  # noqa: PLC0415 - Flask is an optional extra

    from buttress.contrib.flask import Limiter, get_remote_address  # noqa: PLC0415 - idem

    app = Flask("throttling_flaskapp")
    limiter = Limiter(
        get_remote_address,
        app=app,
        default_limits=DEFAULT_LIMITS,
        storage_uri="memory://",
        strategy="fixed-window",
    )

    @app.route("/limited")
    def limited() -> str:
        return "This route is limited by the default limits: 100 per day, 10 per hour.\n"

    @app.route("/more_limited")
    @limiter.limit(MORE_LIMITED)
    def more_limited() -> str:
        return "This route has its own, stricter limit: 2 per minute.\n"

    return app


@contextlib.contextmanager
def serving(app: Flask) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a background thread; yield its base URL."""
    from werkzeug.serving import WSGIRequestHandler, make_server  # noqa: PLC0415 - with Flask

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            """Log nothing: the demo prints each answer itself."""

    server = make_server("127.0.0.1", 0, app, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


def fetch(base: str, path: str, number: int) -> Answer:
    """GET ``base + path`` (never through a proxy); a 429 is an answer, not an error."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    response: Any
    try:
        response = opener.open(base + path, timeout=5)
    except urllib.error.HTTPError as error:
        response = error
    with response:
        headers = {name: response.headers[name] for name in _SHOWN if name in response.headers}
        return Answer(path, number, response.status, headers)


def describe(answer: Answer) -> str:
    """One line for an answer: the request, its status and its rate limit headers."""
    reason = "OK" if answer.status == 200 else "Too Many Requests"
    headers = "  ".join(f"{name}: {value}" for name, value in answer.headers.items())
    return f"GET {answer.path:<13} #{answer.number:<2} -> {answer.status} {reason:<17}  {headers}"


def run(app: Flask | None = None) -> list[Answer]:
    """Serve the chapter's app, send the demo's requests and print each answer.

    Returns:
        The answers, in the order received.
    """
    app = make_app() if app is None else app
    answers: list[Answer] = []
    with serving(app) as base:
        print(f"The chapter's app is serving on {base}; every request comes from 127.0.0.1.")
        for path, count in REQUESTS.items():
            for number in range(1, count + 1):
                answer = fetch(base, path, number)
                answers.append(answer)
                print(describe(answer))
    return answers


def _admitted(answers: list[Answer], path: str) -> tuple[int, Answer | None]:
    """How many requests to ``path`` passed before the first 429, and that 429."""
    mine = [answer for answer in answers if answer.path == path]
    for index, answer in enumerate(mine):
        if answer.status == 429:
            return index, answer
    return len(mine), None


def explain(answers: list[Answer]) -> str:
    """Say in plain words where and why the 200s turned into 429s."""
    lines = ["What happened:"]
    passed, refused = _admitted(answers, "/limited")
    lines.append(
        f"  /limited has no limit of its own, so the default limits apply to it: "
        f"{' and '.join(DEFAULT_LIMITS)}, per client address. Requests 1-{passed} were admitted "
        "(RateLimit-Remaining counts down what is left of the tightest limit, 10 per hour)"
        + (
            f"; request {refused.number} got 429 Too Many Requests, with Retry-After "
            f"{refused.headers.get('Retry-After')} s: the hour's window (fixed, from the first "
            "request) must end first."
            if refused
            else "; none was refused."
        )
    )
    passed, refused = _admitted(answers, "/more_limited")
    lines.append(
        f"  /more_limited has its own limit, @limiter.limit({MORE_LIMITED!r}), which replaces the "
        f"defaults. Requests 1-{passed} were admitted"
        + (
            f"; request {refused.number} got 429, with Retry-After "
            f"{refused.headers.get('Retry-After')} s, until the minute is over."
            if refused
            else "; none was refused."
        )
    )
    lines.append(
        "  Each limit is counted per route and per client: the 429s of /limited did not touch "
        "/more_limited's count. A refused request reached no view and consumed nothing."
    )
    return "\n".join(lines)


def main(seed: int = 0) -> None:
    """Run the chapter's app, send its requests, print the answers and explain them."""
    del seed  # nothing is random here
    try:
        import flask  # noqa: F401, PLC0415 - only to say what to install when it is missing
    except ImportError:
        print(_INSTALL_HINT)
        return
    answers = run()
    print()
    print(explain(answers))


if __name__ == "__main__":
    main(0)
