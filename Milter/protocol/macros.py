"""Macro storage and lookup, as libmilter keeps them (PROTOCOL.md §3.5).

Seven slots (libmilter's CI_* order: connect, helo, mail, rcpt, data, eoh,
eom).  A MACRO packet replaces its stage's slot; CONNECT, HELO, MAIL and RCPT
clear the slots after their own; lookup runs from eom back to connect, and a
single-letter name ``x`` also matches ``{x}`` and the other way round.
"""

from __future__ import annotations

from typing import Final

from . import constants as C

SLOT_CONNECT: Final = 0
SLOT_HELO: Final = 1
SLOT_MAIL: Final = 2
SLOT_RCPT: Final = 3
SLOT_DATA: Final = 4
SLOT_EOH: Final = 5
SLOT_EOM: Final = 6
NSLOTS: Final = 7

# MACRO's command byte -> slot.  Postfix also sends L, B and U; libmilter ignores them.
STAGE_SLOT: Final = {
    C.SMFIC_CONNECT: SLOT_CONNECT,
    C.SMFIC_HELO: SLOT_HELO,
    C.SMFIC_MAIL: SLOT_MAIL,
    C.SMFIC_RCPT: SLOT_RCPT,
    C.SMFIC_DATA: SLOT_DATA,
    C.SMFIC_EOH: SLOT_EOH,
    C.SMFIC_BODYEOB: SLOT_EOM,
}

# SMFIM_* (pymilter M_*) stage number -> slot; note EOM=5 and EOH=6 on the wire.
SMFIM_SLOT: Final = {
    C.SMFIM_CONNECT: SLOT_CONNECT,
    C.SMFIM_HELO: SLOT_HELO,
    C.SMFIM_ENVFROM: SLOT_MAIL,
    C.SMFIM_ENVRCPT: SLOT_RCPT,
    C.SMFIM_DATA: SLOT_DATA,
    C.SMFIM_EOH: SLOT_EOH,
    C.SMFIM_EOM: SLOT_EOM,
}


def canonical_name(name: bytes) -> bytes:
    """``{x}`` and ``x`` are one name for single letters; longer names keep braces."""
    if len(name) == 3 and name[:1] == b"{" and name[2:] == b"}":
        return name[1:2]
    return name


class MacroStore:
    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: list[dict[bytes, bytes] | None] = [None] * NSLOTS

    def define(self, stage: int, pairs: tuple[tuple[bytes, bytes | None], ...]) -> None:
        """Store a MACRO packet.  Unknown stages and empty lists are ignored."""
        slot = STAGE_SLOT.get(stage)
        if slot is None or not pairs:
            return
        values: dict[bytes, bytes] = {}
        for name, value in pairs:
            if value is None:
                continue  # an odd trailing name has no value: "not defined"
            values.setdefault(canonical_name(name), value)  # first match wins
        self._slots[slot] = values

    def define_raw(self, stage: int, data: bytes) -> None:
        """Store a MACRO packet's ``cstr[]`` list (the payload after the stage
        byte) without building a :class:`~.commands.Macro` first."""
        slot = STAGE_SLOT.get(stage)
        if slot is None:
            return
        strings = data.split(b"\0")
        del strings[-1]  # bytes after the last NUL are dropped
        if not strings:
            return  # an empty list keeps the stage's previous values
        values: dict[bytes, bytes] = {}
        for i in range(0, len(strings) - 1, 2):  # an odd trailing name has no value
            name = strings[i]
            if len(name) == 3 and name[0] == 0x7B and name[2] == 0x7D:  # {x} -> x
                name = name[1:2]
            if name not in values:  # first match wins
                values[name] = strings[i + 1]
        self._slots[slot] = values

    def clear_after(self, slot: int) -> None:
        for i in range(slot + 1, NSLOTS):
            self._slots[i] = None

    def clear(self) -> None:
        self._slots = [None] * NSLOTS

    def get(self, name: bytes) -> bytes | None:
        key = canonical_name(name)
        for values in reversed(self._slots):
            if values is not None:
                value = values.get(key)
                if value is not None:
                    return value
        return None

    def slot(self, slot: int) -> dict[bytes, bytes]:
        """A copy of one slot's macros (for logging and tests)."""
        return dict(self._slots[slot] or {})
