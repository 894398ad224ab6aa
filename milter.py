"""The top-level ``milter`` module: pymilter's C extension module, in pure
Python.  Code written for pymilter that does ``import milter`` (or ``from
milter import *``) gets the same names: the constants, ``error``, the
``set_*_callback`` setters, ``register``, ``setconn``, ``settimeout``,
``setbacklog``, ``setdbg``, ``set_flags``, ``set_exception_policy``,
``opensocket``, ``main``, ``stop``, ``getversion`` and ``getdiag``.  They are
the objects of :mod:`Milter.lowlevel`, so both spellings share one
registration.  pymilter's C module keeps its context type (``milter.Context``)
out of the module namespace; here it is :class:`Milter.context.Context`.
"""

from typing import TYPE_CHECKING

from Milter import lowlevel as _lowlevel

if TYPE_CHECKING:  # the same names, for type checkers
    from Milter.lowlevel import *  # noqa: F403

#: The public names of pymilter 1.0.5's C module, as ``dir(milter)`` lists them.
__all__ = """
ACCEPT ADDHDRS ADDRCPT ADDRCPT_PAR ALL_OPTS CHGBODY CHGFROM CHGHDRS CONTINUE CURR_ACTS DELRCPT
DISCARD FAILURE MODBODY M_CONNECT M_DATA M_ENVFROM M_ENVRCPT M_EOH M_EOM M_HELO NOREPLY
P_HDR_LEADSPC P_NOBODY P_NOCONNECT P_NODATA P_NOEOH P_NOHDRS P_NOHELO P_NOMAIL P_NORCPT
P_NOUNKNOWN P_NR_BODY P_NR_CONN P_NR_DATA P_NR_EOH P_NR_HDR P_NR_HELO P_NR_MAIL P_NR_RCPT
P_NR_UNKN P_RCPT_REJ P_SKIP QUARANTINE REJECT SETSYMLIST SKIP SUCCESS TEMPFAIL V1_ACTS V2_ACTS
VERSION error getdiag getversion main opensocket register set_abort_callback set_body_callback
set_close_callback set_connect_callback set_envfrom_callback set_envrcpt_callback
set_eoh_callback set_eom_callback set_exception_policy set_flags set_header_callback
set_helo_callback setbacklog setconn setdbg settimeout stop
""".split()  # noqa: SIM905 - copied from the dir() listing

globals().update({name: getattr(_lowlevel, name) for name in __all__})
