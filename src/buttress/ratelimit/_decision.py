"""What a limiter answers for one request: allowed or not, and the numbers behind it."""

from __future__ import annotations

from dataclasses import dataclass

from buttress.ratelimit._rate import Rate

__all__ = ["Decision"]


# Not frozen: a frozen dataclass's __init__ costs four times more, and a decision is built for
# every request. Treat it as a value; dataclasses.replace() makes changed copies.
@dataclass(slots=True)
class Decision:
    """The answer of a limiter for one request (or one ``peek``); a value, not to be changed.

    With several limits on one key, the numbers are those of the *binding* limit: the one that
    rejected (the latest ``retry_after`` if several did), or else the one with the least
    ``remaining``.

    Attributes:
        allowed: Whether the request is admitted (for ``peek``: would be).
        limit: The binding limit's count (``RateLimit-Limit``).
        remaining: Units still available under it after this request (``RateLimit-Remaining``).
        reset_after: Seconds until its quota is fully restored (``RateLimit-Reset``).
        retry_after: When rejected, seconds until this request could be admitted
            (``Retry-After``); ``None`` when allowed.
        rate: The binding :class:`Rate`.
        degraded: ``True`` when the store failed and the limiter's ``on_store_error`` policy
            answered instead (fail open, fail closed, or the local fallback).
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float | None
    rate: Rate
    degraded: bool = False

    def __bool__(self) -> bool:
        return self.allowed
