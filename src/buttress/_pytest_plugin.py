"""The pytest plugin registered by buttress's ``pytest11`` entry point.

Fixtures:
    buttress_instant_waits: makes every buttress wait instant for the test and yields the
        :class:`buttress.testing.InstantWaits` record.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from buttress.testing import InstantWaits, instant_waits


@pytest.fixture
def buttress_instant_waits() -> Iterator[InstantWaits]:
    """Make every buttress wait instant during the test; yield the record of skipped waits."""
    with instant_waits() as waits:
        yield waits
