"""Numeric constants of the milter protocol, with libmilter's values.

Names follow ``include/libmilter/mfdef.h`` and ``mfapi.h`` (sendmail 8.17).
Command and reply codes are single bytes, given here as ``int``.
"""

from __future__ import annotations

from typing import Final

# --- MTA -> milter commands (SMFIC_*) -------------------------------------
SMFIC_ABORT: Final = ord("A")
SMFIC_BODY: Final = ord("B")
SMFIC_CONNECT: Final = ord("C")
SMFIC_MACRO: Final = ord("D")
SMFIC_BODYEOB: Final = ord("E")
SMFIC_HELO: Final = ord("H")
SMFIC_QUIT_NC: Final = ord("K")
SMFIC_HEADER: Final = ord("L")
SMFIC_MAIL: Final = ord("M")
SMFIC_EOH: Final = ord("N")
SMFIC_OPTNEG: Final = ord("O")
SMFIC_QUIT: Final = ord("Q")
SMFIC_RCPT: Final = ord("R")
SMFIC_DATA: Final = ord("T")
SMFIC_UNKNOWN: Final = ord("U")

# --- milter -> MTA replies (SMFIR_*) ---------------------------------------
SMFIR_ADDRCPT: Final = ord("+")
SMFIR_DELRCPT: Final = ord("-")
SMFIR_ADDRCPT_PAR: Final = ord("2")
SMFIR_SHUTDOWN: Final = ord("4")
SMFIR_ACCEPT: Final = ord("a")
SMFIR_REPLBODY: Final = ord("b")
SMFIR_CONTINUE: Final = ord("c")
SMFIR_DISCARD: Final = ord("d")
SMFIR_CHGFROM: Final = ord("e")
SMFIR_CONN_FAIL: Final = ord("f")
SMFIR_ADDHEADER: Final = ord("h")
SMFIR_INSHEADER: Final = ord("i")
SMFIR_SETSYMLIST: Final = ord("l")
SMFIR_CHGHEADER: Final = ord("m")
SMFIR_PROGRESS: Final = ord("p")
SMFIR_QUARANTINE: Final = ord("q")
SMFIR_REJECT: Final = ord("r")
SMFIR_SKIP: Final = ord("s")
SMFIR_TEMPFAIL: Final = ord("t")
SMFIR_REPLYCODE: Final = ord("y")
SMFIR_OPTNEG: Final = SMFIC_OPTNEG

# --- action flags (SMFIF_*) --------------------------------------------------
SMFIF_ADDHDRS: Final = 0x001
SMFIF_CHGBODY: Final = 0x002
SMFIF_ADDRCPT: Final = 0x004
SMFIF_DELRCPT: Final = 0x008
SMFIF_CHGHDRS: Final = 0x010
SMFIF_QUARANTINE: Final = 0x020
SMFIF_CHGFROM: Final = 0x040
SMFIF_ADDRCPT_PAR: Final = 0x080
SMFIF_SETSYMLIST: Final = 0x100
SMFI_V1_ACTS: Final = 0x00F
SMFI_V2_ACTS: Final = 0x03F
SMFI_CURR_ACTS: Final = 0x1FF

# --- protocol flags (SMFIP_*) ------------------------------------------------
SMFIP_NOCONNECT: Final = 0x000001
SMFIP_NOHELO: Final = 0x000002
SMFIP_NOMAIL: Final = 0x000004
SMFIP_NORCPT: Final = 0x000008
SMFIP_NOBODY: Final = 0x000010
SMFIP_NOHDRS: Final = 0x000020
SMFIP_NOEOH: Final = 0x000040
SMFIP_NR_HDR: Final = 0x000080
SMFIP_NOUNKNOWN: Final = 0x000100
SMFIP_NODATA: Final = 0x000200
SMFIP_SKIP: Final = 0x000400
SMFIP_RCPT_REJ: Final = 0x000800
SMFIP_NR_CONN: Final = 0x001000
SMFIP_NR_HELO: Final = 0x002000
SMFIP_NR_MAIL: Final = 0x004000
SMFIP_NR_RCPT: Final = 0x008000
SMFIP_NR_DATA: Final = 0x010000
SMFIP_NR_UNKN: Final = 0x020000
SMFIP_NR_EOH: Final = 0x040000
SMFIP_NR_BODY: Final = 0x080000
SMFIP_HDR_LEADSPC: Final = 0x100000
SMFIP_MDS_256K: Final = 0x10000000
SMFIP_MDS_1M: Final = 0x20000000
SMFI_V1_PROT: Final = 0x3F
SMFI_CURR_PROT: Final = 0x1FFFFF
# Bits libmilter keeps for itself (MDS sizes plus one reserved bit).
SMFI_INTERNAL: Final = 0x70000000
# Every "no reply" bit: libmilter can emulate all of them (engine.c fake_pflags).
SMFIP_FAKE_NR: Final = (
    SMFIP_NR_CONN | SMFIP_NR_HELO | SMFIP_NR_MAIL | SMFIP_NR_RCPT | SMFIP_NR_DATA
    | SMFIP_NR_UNKN | SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY
)

# --- macro stages on the wire (SMFIM_*) -------------------------------------
SMFIM_CONNECT: Final = 0
SMFIM_HELO: Final = 1
SMFIM_ENVFROM: Final = 2
SMFIM_ENVRCPT: Final = 3
SMFIM_DATA: Final = 4
SMFIM_EOM: Final = 5
SMFIM_EOH: Final = 6

# --- callback results (sfsistat, mfapi.h) -----------------------------------
SMFIS_CONTINUE: Final = 0
SMFIS_REJECT: Final = 1
SMFIS_DISCARD: Final = 2
SMFIS_ACCEPT: Final = 3
SMFIS_TEMPFAIL: Final = 4
SMFIS_NOREPLY: Final = 7
SMFIS_SKIP: Final = 8
SMFIS_ALL_OPTS: Final = 10

# --- CONNECT address families (SMFIA_*) -------------------------------------
SMFIA_UNKNOWN: Final = ord("U")
SMFIA_UNIX: Final = ord("L")
SMFIA_INET: Final = ord("4")
SMFIA_INET6: Final = ord("6")

# --- sizes --------------------------------------------------------------------
MILTER_LEN_BYTES: Final = 4
MILTER_OPTLEN: Final = 12
# libmilter's MILTER_MAX_DATA_SIZE; we never *send* a packet with more data.
MILTER_CHUNK_SIZE: Final = 65535
# What we accept by default (Postfix does not cap HEADER packets; PROTOCOL.md §2).
DEFAULT_MAX_DATA_SIZE: Final = 1024 * 1024
# The highest protocol version we speak (SMFI_PROT_VERSION).
SMFI_PROT_VERSION: Final = 6
SMFI_PROT_VERSION_MIN: Final = 2
