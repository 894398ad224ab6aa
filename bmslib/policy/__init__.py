"""bms policy steps: decisions over a transaction snapshot.

Each step is a small module with a frozen settings object and a function or
class that returns a :class:`~bmslib.policy.decision.Decision`.  Steps reach
DNS, SMTP, the clock and storage only through the interfaces in
:mod:`bmslib.interfaces`, so each is unit-tested with fakes.  ``bms.py``
wires them into the milter callbacks.
"""
