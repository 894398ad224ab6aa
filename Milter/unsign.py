"""pymilter's ``Milter.unsign``: the original address inside an SRS-rewritten
(signed) one, without checking the signature (Shevek's SRS scheme as pysrs
writes it: ``SRS0=HHH=TT=domain=local@forwarder`` and
``SRS1=HHH=forwarder==HHH=TT=domain=local@next-forwarder``).  Anything else
is returned unchanged.

>>> unsign('SRS0=8Y3CZ=3U=jsconnor.com=bills@bmsi.com')
'bills@jsconnor.com'
>>> unsign('SRS1=x7Rq=fwd.example==8Y3CZ=3U=jsconnor.com=bills@bmsi.com')
'bills@jsconnor.com'
>>> unsign('srs0+8Y3CZ=3U=jsconnor.com=bills=x@bmsi.com')
'bills=x@jsconnor.com'
>>> unsign('someone@example.com')
'someone@example.com'
"""

from __future__ import annotations

import re

__all__ = ["unsign"]

_SEP = "[=+-]"
_SRS0 = re.compile(rf"SRS0{_SEP}[^=]*=[^=]*=([^=@]+)=(.+)\Z", re.IGNORECASE)
_SRS1 = re.compile(rf"SRS1{_SEP}[^=]*=[^=]*=={_SEP}?(.*)\Z", re.IGNORECASE)


def unsign(s: str) -> str:
    """The address ``s`` stands for, if it is SRS-signed; else ``s``."""
    local, at, _host = s.rpartition("@")
    if not at:
        return s
    m1 = _SRS1.match(local)
    if m1:
        local = "SRS0=" + m1.group(1)
    m0 = _SRS0.match(local)
    if not m0:
        return s
    return f"{m0.group(2)}@{m0.group(1)}"
