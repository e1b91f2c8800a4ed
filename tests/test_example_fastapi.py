"""The chapter's throttling example as a FastAPI app (``examples/throttling_fastapi.py``).

Through httpx's ASGI transport (a fresh module, so fresh counts, for each test), and once served
by a real uvicorn, started both ways the example's docstring gives.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from ._redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "throttling_fastapi.py"


@pytest.fixture
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("throttling_fastapi_under_test", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def client(example: ModuleType, peer: str = "1.2.3.4") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=example.app, client=(peer, 123))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")


class TestChapterLimits:
    async def test_the_11th_request_an_hour_to_limited_is_refused(self, example):
        async with client(example) as http:
            for number in range(1, 11):
                response = await http.get("/limited")
                assert response.status_code == 200, number
                assert response.text == "Welcome to our API!"
                assert response.headers["RateLimit-Remaining"] == str(10 - number)
            refused = await http.get("/limited")
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "3600"
        assert refused.headers["RateLimit-Policy"] == "100;w=86400, 10;w=3600"
        assert refused.text == "Too Many Requests: 10 per 1 hour. Retry after 3600 s.\n"

    async def test_the_3rd_request_a_minute_to_more_limited_is_refused(self, example):
        async with client(example) as http:
            codes = [(await http.get("/more_limited")).status_code for _ in range(3)]
            refused = await http.get("/more_limited", headers={"accept": "application/json"})
            # The route's own limit replaces the defaults: /limited is untouched.
            limited = await http.get("/limited")
        assert codes == [200, 200, 429]
        assert refused.json() == {
            "error": "too_many_requests",
            "message": "Too Many Requests: 2 per 1 minute",
            "limit": "2 per 1 minute",
            "retry_after": 60,
        }
        assert refused.headers["Retry-After"] == "60"
        assert limited.status_code == 200
        assert limited.headers["RateLimit-Remaining"] == "9"

    async def test_each_client_has_its_own_counts(self, example):
        async with client(example) as http:
            for _ in range(2):
                await http.get("/more_limited")
        async with client(example, peer="5.6.7.8") as http:
            assert (await http.get("/more_limited")).status_code == 200

    async def test_fastapis_own_pages_are_exempt(self, example):
        async with client(example) as http:
            for _ in range(12):
                response = await http.get("/openapi.json")
                assert response.status_code == 200
                assert "RateLimit-Limit" not in response.headers
            assert (await http.get("/docs")).status_code == 200
            assert (await http.get("/limited")).headers["RateLimit-Remaining"] == "9"


def answer(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None  # not listening yet


def wait_for(url: str, process: subprocess.Popen[bytes]) -> httpx.Response:
    deadline = time.monotonic() + 20
    while (response := answer(url)) is None:
        assert process.poll() is None, "the server exited"
        assert time.monotonic() < deadline, "the server did not answer within 20 s"
        time.sleep(0.05)
    return response


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([str(EXAMPLE), "--port"], id="python-examples-file"),
        pytest.param(
            ["-m", "uvicorn", "examples.throttling_fastapi:app", "--host", "127.0.0.1", "--port"],
            id="uvicorn-module-app",
        ),
    ],
)
def test_served_by_uvicorn(command):
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - our own example, on a loopback port
        [sys.executable, *command, str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/more_limited"
        first = wait_for(url, process)
        codes = [first.status_code] + [httpx.get(url, timeout=5).status_code for _ in range(2)]
        refused = httpx.get(url, timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert codes == [200, 200, 429]
    assert first.headers["RateLimit-Limit"] == "2"
    assert refused.headers["Retry-After"] == "60"
