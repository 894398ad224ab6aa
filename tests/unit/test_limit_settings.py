"""The limit settings of the module API (bms extensions, issue 13) reach the server."""

from __future__ import annotations

import pytest

import Milter
from Milter import lowlevel


def test_setters_fill_the_registration_and_the_server_gets_them() -> None:
    reg = lowlevel.registration()
    saved = (reg.session_deadline, reg.message_deadline, reg.max_connections)
    try:
        Milter.setsessiontimeout(60)
        Milter.setmessagetimeout(30.5)
        Milter.setmaxconnections(7)
        assert (reg.session_deadline, reg.message_deadline, reg.max_connections) == \
            (60.0, 30.5, 7)
        reg_copy = lowlevel.Registration(conn="inet:0@127.0.0.1", session_deadline=60,
                                         message_deadline=30.5, max_connections=7)
        server = lowlevel.make_server(reg_copy)
        assert (server.session_deadline, server.message_deadline, server.max_connections) \
            == (60, 30.5, 7)
    finally:
        reg.session_deadline, reg.message_deadline, reg.max_connections = saved


@pytest.mark.parametrize("setter", [Milter.setsessiontimeout, Milter.setmessagetimeout,
                                    Milter.setmaxconnections])
def test_negative_limits_are_refused(setter: object) -> None:
    with pytest.raises(Milter.error):
        setter(-1)  # type: ignore[operator]
