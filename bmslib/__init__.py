"""bmslib: the library behind ``bms.py``, the bms policy milter application.

Everything bms decides and keeps lives here: the ``pymilter.cfg`` schema
(:mod:`.config`), the access file (:mod:`.access`), the policy steps
(:mod:`.policy`), content scanning (:mod:`.content`), the state store
(:mod:`.state`), DNS, the mail archive, logging, metrics, privileges, and
:class:`.milter.BmsMilter`, the ``Milter.Base`` subclass that hands each
callback to the policy pipeline.  It builds on the :mod:`Milter` framework,
which never imports it; ``bms.py`` wires the two together.
"""

__version__ = "0.2.0"
