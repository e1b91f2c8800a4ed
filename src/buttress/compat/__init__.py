"""Drop-in faces of other resilience libraries, implemented on buttress's own policies.

* :mod:`buttress.compat.pybreaker`: the public surface of pybreaker 1.x, so that code written for
  pybreaker runs on :class:`buttress.CircuitBreaker` by changing only its import::

      from buttress.compat import pybreaker

Each module documents exactly what it covers, what it does not, and where it behaves differently.
The modules are imported on demand: importing :mod:`buttress.compat` imports none of them.
"""

__all__: list[str] = []
