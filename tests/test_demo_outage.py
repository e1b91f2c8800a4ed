"""``buttress demo``'s outage scenario: a real upstream process, real HTTP, the measured summary.

The protected client must beat the naive one on what was measured: fewer requests on the service
while it is down, fewer attempts, lower latency, and a higher success rate (the naive client's
retry storm leaves the service a backlog to clear after it comes back).
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from buttress._cli import main
from buttress.demo import outage


@pytest.fixture(scope="module")
def figures() -> dict[str, dict[str, float]]:
    return asyncio.run(outage.run_scenario(15, 9, "memory://", live=False))


class TestOutageScenario:
    def test_the_protected_client_puts_less_load_on_the_failing_service(self, figures):
        naive, guarded = figures["naive"], figures["buttress"]
        assert guarded["outage_load"] < naive["outage_load"] / 3
        assert guarded["attempts"] < naive["attempts"]

    def test_the_protected_client_answers_faster_and_more_often(self, figures):
        naive, guarded = figures["naive"], figures["buttress"]
        assert guarded["p50"] < naive["p50"]
        assert guarded["p99"] < naive["p99"]
        assert guarded["success"] > naive["success"]
        assert guarded["recovered_in"] <= 3  # healthy again within a few seconds

    def test_both_clients_sent_the_same_calls(self, figures):
        assert figures["naive"]["calls"] == figures["buttress"]["calls"] > 0


class TestDemoCommand:
    def test_plain_output_and_the_summary(self, capsys, redis_url, redis_prefix):
        prefix = f"{redis_prefix}-demo"
        assert main(["demo", "--no-live", "--seconds", "10", "--redis", redis_url]) == 0
        out = capsys.readouterr().out
        assert "=== buttress demo outage ===" in out
        assert "t= 1s healthy" in out
        assert "Summary:" in out
        assert "load on the service while down" in out
        client = redis.Redis.from_url(redis_url)
        try:
            # The run's keys are gone (the demo picks its own prefix and deletes under it).
            assert not list(client.scan_iter(match="{buttress-demo-*", count=1000))
            assert not list(client.scan_iter(match=f"{{{prefix}:*", count=1000))
        finally:
            client.close()

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            (["--seconds", "5"], "--seconds must be between 10 and 600"),
            (["--redis", "http://x"], "--redis must be a redis://"),
            (["nope"], "unknown demo 'nope'"),
        ],
    )
    def test_bad_arguments_are_refused(self, capsys, arguments, message):
        with pytest.raises(SystemExit) as info:
            main(["demo", *arguments])
        assert info.value.code == 2
        assert message in capsys.readouterr().err
