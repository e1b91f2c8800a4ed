"""Typed events and the listeners that receive them.

Every policy reports what it does as small immutable event objects (for retry:
:class:`~buttress.RetryScheduled`, :class:`~buttress.RetrySucceeded`, ...). A *listener* is any
callable taking one event. Listeners are registered on one policy (``listeners=[...]``) or for all
policies with :func:`add_listener`; a standard :class:`LoggingListener` always receives events and
logs them under ``buttress.<pattern>`` loggers, which carry a :class:`logging.NullHandler`: nothing
is printed unless you configure logging.

A listener that raises never breaks the protected call: the error is logged under the
``buttress.events`` logger and the other listeners still run.

Events are built only when something will read them: the success path of a policy with no
listener registered (on it or globally) builds none.
"""

from __future__ import annotations

import builtins
import dataclasses
import enum
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, TypeAlias

__all__ = [
    "Event",
    "Listener",
    "LoggingListener",
    "Subscription",
    "add_listener",
    "check_listeners",
    "emit",
    "event_fields",
    "global_listeners",
    "remove_listener",
]

_log = logging.getLogger("buttress.events")


@dataclass(frozen=True, slots=True)
class Event:
    """The base of every event.

    Attributes:
        policy: The name of the policy that emitted the event.
    """

    logger_name: ClassVar[str] = "buttress"
    """The logger :class:`LoggingListener` uses for this kind of event."""

    policy: str

    @property
    def log_level(self) -> int:
        """The level :class:`LoggingListener` logs this event at (DEBUG unless overridden)."""
        return logging.DEBUG

    def describe(self) -> str:
        """Say what happened in one line, for logs."""
        return f"{type(self).__name__} in {self.policy}"


Listener: TypeAlias = Callable[[Event], None]
"""A callable that receives every event of the policies it is registered on."""


class LoggingListener:
    """Log events with the standard :mod:`logging` module.

    Each event is logged on its own logger (``buttress.retry`` for retry events, ...) at its own
    level, with the event object in the record's ``buttress_event`` attribute, its class name in
    ``buttress_event_type``, and its fields flattened by :func:`event_fields` into plain
    ``buttress_<field>`` attributes (``buttress_policy``, ``buttress_attempt``, ...), so that
    JSON formatters and structlog's ``ExtraAdder`` see them without knowing the event classes.
    One instance always listens to every policy; the loggers carry a :class:`logging.NullHandler`,
    so nothing appears unless logging is configured.
    """

    __slots__ = ("_loggers",)

    def __init__(self) -> None:
        self._loggers: dict[str, logging.Logger] = {}

    def __call__(self, event: Event) -> None:
        """Log ``event`` if its logger is enabled for its level."""
        name = event.logger_name
        logger = self._loggers.get(name)
        if logger is None:
            logger = self._loggers.setdefault(name, logging.getLogger(name))
        level = event.log_level
        if logger.isEnabledFor(level):
            # Built only here, once the record will be made: an unlogged event costs nothing more.
            extra: dict[str, object] = event_fields(event)
            extra["buttress_event"] = event
            extra["buttress_event_type"] = type(event).__name__
            logger.log(level, event.describe(), extra=extra)

    def __repr__(self) -> str:
        return "LoggingListener()"


_REPR_LIMIT = 200


def _type_name(error: BaseException) -> str:
    cls = type(error)
    if cls.__module__ == builtins.__name__:
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _flatten(fields: dict[str, object], key: str, value: object, sep: str, depth: int) -> None:
    if value is None:
        return
    if isinstance(value, enum.Enum):
        fields[key] = value.value
    elif isinstance(value, (bool, int, float, str)):
        fields[key] = value
    elif isinstance(value, BaseException):
        fields[f"{key}{sep}type"] = _type_name(value)
        fields[f"{key}{sep}message"] = str(value)
    elif (
        depth == 0
        and dataclasses.is_dataclass(value)
        and not isinstance(value, type)
        and type(value).__module__.startswith("buttress.")  # a Decision, never a user's result
    ):
        for field in dataclasses.fields(value):
            _flatten(fields, f"{key}{sep}{field.name}", getattr(value, field.name), sep, 1)
    else:
        text = str(value) if depth else repr(value)
        fields[key] = text if len(text) <= _REPR_LIMIT else f"{text[: _REPR_LIMIT - 3]}..."


def event_fields(event: Event, prefix: str = "buttress_", sep: str = "_") -> dict[str, object]:
    """Flatten an event's fields into plain values, for structured logs and span attributes.

    Every value is a ``str``, ``int``, ``float`` or ``bool``: enums give their value, an exception
    gives ``<name><sep>type`` (its class, qualified unless built in) and ``<name><sep>message``, a
    buttress value object (a rate limiter's decision) gives one entry per field, anything else
    (a result) its ``repr`` cut to 200 characters. Fields that are ``None`` are left out.

    Args:
        event: The event.
        prefix: Put before every name (``"buttress_"``: ``buttress_policy``, ...).
        sep: Joins the parts of nested names (``buttress_decision_allowed``).

    Returns:
        A new dict, in the order of the event's fields.
    """
    fields: dict[str, object] = {}
    for field in dataclasses.fields(event):
        _flatten(fields, f"{prefix}{field.name}", getattr(event, field.name), sep, 0)
    return fields


_logging_listener = LoggingListener()
_lock = threading.Lock()
# A tuple, replaced (never mutated) under the lock, so that readers on the hot path need no lock.
_global: tuple[Listener, ...] = ()


def global_listeners() -> tuple[Listener, ...]:
    """Return the listeners registered for every policy (not counting the logging listener)."""
    return _global


class Subscription:
    """A registered global listener; :meth:`remove` (or leaving the ``with`` block) removes it."""

    __slots__ = ("_listener", "_removed")

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._removed = False

    def remove(self) -> None:
        """Stop delivering events to the listener. Calling it again does nothing."""
        if not self._removed:
            self._removed = True
            remove_listener(self._listener)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


def add_listener(listener: Listener) -> Subscription:
    """Deliver the events of every policy to ``listener`` (in addition to their own listeners).

    Args:
        listener: A callable taking one :class:`Event`.

    Returns:
        A :class:`Subscription`; use it as a context manager, or call ``remove()``, to stop.

    Raises:
        TypeError: If ``listener`` is not callable.
    """
    global _global  # noqa: PLW0603 - the registry is replaced atomically, see _global
    if not callable(listener):
        raise TypeError(f"listener must be callable, got {type(listener).__name__}")
    with _lock:
        _global = (*_global, listener)
    return Subscription(listener)


def remove_listener(listener: Listener) -> None:
    """Remove one registration of a global listener; a listener not registered is ignored."""
    global _global  # noqa: PLW0603 - the registry is replaced atomically, see _global
    with _lock:
        items = list(_global)
        for index, item in enumerate(items):
            if item is listener or item == listener:
                del items[index]
                break
        _global = tuple(items)


def check_listeners(listeners: Iterable[Listener], name: str = "listeners") -> tuple[Listener, ...]:
    """Validate a policy's ``listeners`` argument and freeze it into a tuple.

    Raises:
        TypeError: If it is not an iterable of callables (a single callable is refused too, to
            catch ``listeners=fn`` meant as ``listeners=[fn]``).
    """
    candidate: object = listeners
    if callable(candidate) or isinstance(candidate, (str, bytes)):
        raise TypeError(f"{name} must be an iterable of callables, e.g. [{name[:-1]}]")
    try:
        result = tuple(listeners)
    except TypeError:
        raise TypeError(
            f"{name} must be an iterable of callables, got {type(candidate).__name__}"
        ) from None
    item: object
    for item in result:
        if not callable(item):
            raise TypeError(f"{name} must contain callables, got {type(item).__name__}")
    return result


def emit(event: Event, listeners: Sequence[Listener]) -> None:
    """Deliver ``event`` to the logging listener, the global listeners, then ``listeners``.

    A listener that raises is logged on ``buttress.events`` and skipped; the caller never sees it.
    """
    chain: tuple[Listener, ...] = (_logging_listener, *_global, *listeners)
    for listener in chain:
        try:
            listener(event)
        except Exception:  # noqa: BLE001, PERF203 - a broken listener must not break the call
            _log.exception("buttress listener %r failed on %s", listener, type(event).__name__)
