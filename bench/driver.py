"""Direct protocol driver: an MTA simulator that pushes milter transactions.

Each of ``--connections`` driver *processes* plays one Postfix smtpd session
after another, each on a fresh milter connection, as Postfix does for
``smtp-source`` (one message per SMTP session): OPTNEG, then the MACRO
packets Postfix sends with CONNECT, HELO, MAIL, RCPT, DATA, five HEADERs,
EOH, BODY and EOM, then ABORT and QUIT.  It waits for each reply before the
next command (lock step, like an MTA), and honours what the milter
negotiated (``SMFIP_NO*`` stages are skipped, ``SMFIP_NR_*`` ones not waited
for).  Packets are encoded once, with ``Milter.protocol``; a MACRO packet
and its command go out in one ``send`` on a TCP_NODELAY socket, so the
driver never causes a Nagle stall.

The milter's CPU time is read from ``/proc/PID/stat`` (utime+stime of the
process and its descendants: ``workers = 2`` forks) just before the timed
part starts and just after it ends.

    python bench/driver.py inet:8894@127.0.0.1 --connections 4 --messages 8000 \\
        --milter-pid PID [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
import os
import socket
import struct
import sys
import time
from array import array
from dataclasses import asdict, dataclass
from typing import Final

from Milter.protocol import commands as cmd
from Milter.protocol import constants as C
from Milter.protocol import replies as R
from Milter.protocol.framing import FrameDecoder
from Milter.server import parse_socket_spec

QUEUE_ID: Final = b"4XbBmS0QzHz1b"
SENDER: Final = b"<bench@example.net>"
RECIPIENT: Final = b"<rcpt@example.test>"
HEADERS: Final = (
    (b"Received", b"from client.example.net (client.example.net [192.0.2.1])\r\n\tby "
                  b"mx.example.test (Postfix) with SMTP id 4XbBmS0QzHz1b\r\n\tfor "
                  b"<rcpt@example.test>; Mon, 24 Nov 2025 18:00:00 +0000 (UTC)"),
    (b"From", b"Bench Sender <bench@example.net>"),
    (b"To", b"<rcpt@example.test>"),
    (b"Subject", b"benchmark message"),
    (b"Message-Id", b"<20251124180000.4XbBmS0QzHz1b@mx.example.test>"),
)
# 512 bytes of body in lines of 64 bytes, CRLF-terminated, as smtp-source -l 512.
BODY: Final = (b"x" * 62 + b"\r\n") * 8

CONTINUE_PACKET: Final = R.CONTINUE.encode()
OK_EOM: Final = frozenset((C.SMFIR_CONTINUE, C.SMFIR_ACCEPT))
FINAL: Final = frozenset(
    (C.SMFIR_CONTINUE, C.SMFIR_ACCEPT, C.SMFIR_REJECT, C.SMFIR_TEMPFAIL, C.SMFIR_DISCARD,
     C.SMFIR_REPLYCODE, C.SMFIR_SKIP)
)
# What Postfix 3.7 offers: protocol 6, every action, every protocol step.
OPTNEG: Final = cmd.OptNeg(6, C.SMFI_CURR_ACTS, C.SMFI_CURR_PROT).encode()


def _macro(stage: str, *pairs: tuple[bytes, bytes]) -> bytes:
    return cmd.Macro(ord(stage), tuple(pairs)).encode()


# (macro packet or b"", command packet, skip flag, no-reply flag) in Postfix's order.
# Postfix's default milter_*_macros, with the values it has for a plain SMTP client
# (the HELO macros are TLS ones: none without TLS, so no MACRO packet is sent).
Stage = tuple[bytes, bytes, int, int]
SESSION_STAGES: Final[tuple[Stage, ...]] = (
    (_macro("C", (b"j", b"mx.example.test"), (b"{daemon_name}", b"mx.example.test"),
            (b"{daemon_addr}", b"127.0.0.1"), (b"v", b"Postfix 3.7.11"),
            (b"_", b"client.example.net [192.0.2.1]")),
     cmd.Connect(b"client.example.net", C.SMFIA_INET, 41000, "192.0.2.1").encode(),
     C.SMFIP_NOCONNECT, C.SMFIP_NR_CONN),
    (b"", cmd.Helo(b"client.example.net").encode(), C.SMFIP_NOHELO, C.SMFIP_NR_HELO),
)
MESSAGE_STAGES: Final[tuple[Stage, ...]] = (
    (_macro("M", (b"{mail_addr}", SENDER[1:-1])),
     cmd.Mail((SENDER, b"SIZE=1024")).encode(), C.SMFIP_NOMAIL, C.SMFIP_NR_MAIL),
    (_macro("R", (b"i", QUEUE_ID), (b"{rcpt_addr}", RECIPIENT[1:-1]),
            (b"{rcpt_host}", b"example.test"), (b"{rcpt_mailer}", b"virtual")),
     cmd.Rcpt((RECIPIENT,)).encode(), C.SMFIP_NORCPT, C.SMFIP_NR_RCPT),
    (_macro("T", (b"i", QUEUE_ID)), cmd.Data().encode(), C.SMFIP_NODATA, C.SMFIP_NR_DATA),
    *((b"", cmd.Header(name, value).encode(), C.SMFIP_NOHDRS, C.SMFIP_NR_HDR)
      for name, value in HEADERS),
    (_macro("N", (b"i", QUEUE_ID)), cmd.EndOfHeaders().encode(), C.SMFIP_NOEOH,
     C.SMFIP_NR_EOH),
    (b"", cmd.Body(BODY).encode(), C.SMFIP_NOBODY, C.SMFIP_NR_BODY),
    (_macro("E", (b"i", QUEUE_ID)), cmd.EndOfMessage().encode(), 0, 0),
)
ABORT: Final = cmd.Abort().encode()
QUIT: Final = cmd.Quit().encode()

# A plan is what one transaction sends: (bytes, wait for a reply?) per send.
Plan = tuple[tuple[bytes, bool], ...]


def build_plan(protocol: int, stages: tuple[Stage, ...], prefix: bytes = b"") -> Plan:
    """Group packets into sends: a send ends with each command that gets a reply."""
    steps: list[tuple[bytes, bool]] = []
    pending = prefix
    for macro, packet, skip, noreply in stages:
        if skip and protocol & skip:
            continue
        pending += macro + packet
        if not (noreply and protocol & noreply):
            steps.append((pending, True))
            pending = b""
    if pending:
        steps.append((pending, False))
    return tuple(steps)


class DriverError(RuntimeError):
    pass


class Conn:
    """One milter connection, lock step; recv fast path for a bare CONTINUE."""

    __slots__ = ("decoder", "recv", "send", "sock")

    def __init__(self, family: int, address: str | tuple[str, int]) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if family != socket.AF_UNIX:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A kernel timeout, not settimeout(): with a Python-level timeout every
        # send and recv is preceded by a poll() (twice the syscalls).
        timeout = struct.pack("ll", 60, 0)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
        self.sock.connect(address)
        self.send = self.sock.sendall
        self.recv = self.sock.recv
        self.decoder = FrameDecoder(max_data_size=1 << 24)

    def frame(self) -> tuple[int, bytes]:
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            data = self.recv(65536)
            if not data:
                raise DriverError("milter closed the connection")
            self.decoder.feed(data)

    def run(self, plan: Plan) -> None:
        send, recv = self.send, self.recv
        for data, wait in plan:
            send(data)
            if wait:
                got = b"" if self.decoder.buffered else recv(65536)
                if got != CONTINUE_PACKET:
                    self._slow_reply(got)

    def _slow_reply(self, got: bytes) -> None:
        """Not exactly one CONTINUE packet: a split read, progress, edits, a verdict."""
        if not got and not self.decoder.buffered:
            raise DriverError("milter closed the connection")
        self.decoder.feed(got)
        while True:
            code, payload = self.frame()
            if code in FINAL:
                break
        if code not in OK_EOM:
            raise DriverError(f"milter answered {R.parse_reply(code, payload)!r}")


@dataclass
class Plans:
    first: Plan  # CONNECT .. EOM of the first message on a connection
    next: Plan  # ABORT + MAIL .. EOM of each further message
    last: bytes  # ABORT + QUIT


_plans: dict[int, Plans] = {}


def plans_for(protocol: int) -> Plans:
    plans = _plans.get(protocol)
    if plans is None:
        first = build_plan(protocol, SESSION_STAGES + MESSAGE_STAGES)
        nxt = build_plan(protocol, MESSAGE_STAGES, prefix=ABORT)
        plans = _plans[protocol] = Plans(first, nxt, ABORT + QUIT)
    return plans


def one_connection(family: int, address: str | tuple[str, int], messages: int,
                   latencies: array[float]) -> None:
    """One milter connection carrying ``messages`` transactions; appends latencies."""
    clock = time.perf_counter
    start = clock()
    conn = Conn(family, address)
    try:
        conn.send(OPTNEG)
        code, payload = conn.frame()
        if code != C.SMFIR_OPTNEG:
            raise DriverError(f"OPTNEG answered with {chr(code)!r}")
        plans = plans_for(R.parse_optneg_reply(payload).protocol)
        for i in range(messages):
            plan = plans.first if i == 0 else plans.next
            if i:
                start = clock()
            conn.run(plan)
            latencies.append(clock() - start)
        conn.send(plans.last)
    finally:
        conn.sock.close()


@dataclass
class WorkerResult:
    latencies: bytes  # array('d')
    cpu: float  # this driver process, timed part only
    errors: int


def _worker(family: int, address: str | tuple[str, int], messages: int, per_conn: int,
            warmup: int, barrier: multiprocessing.synchronize.Barrier,
            out: multiprocessing.connection.Connection) -> None:
    scratch: array[float] = array("d")
    for _ in range(max(1, warmup // per_conn)):
        one_connection(family, address, per_conn, scratch)
    latencies: array[float] = array("d")
    barrier.wait()
    cpu0 = time.process_time()
    errors = 0
    left = messages
    while left > 0:
        n = min(per_conn, left)
        try:
            one_connection(family, address, n, latencies)
        except (OSError, DriverError) as exc:
            errors += 1
            if errors == 1:
                print(f"driver: {exc}", file=sys.stderr)
            if errors > 10:
                break
        left -= n
    cpu = time.process_time() - cpu0
    out.send(WorkerResult(latencies.tobytes(), cpu, errors))
    out.close()


# --- milter CPU time from /proc ----------------------------------------------------

_TICK: Final = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, utime, stime) of ``pid`` (seconds), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    # After "pid (comm) ": state ppid ... utime(14) stime(15), 1-based in proc(5).
    return int(fields[1]), int(fields[11]) / _TICK, int(fields[12]) / _TICK


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and all its live descendants (threads included)."""
    user, system = tree_cpu_split(root)
    return user + system


def tree_cpu_split(root: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``root`` and its live descendants."""
    stats: dict[int, tuple[int, float, float]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                stats[int(name)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _user, _system) in stats.items():
        children.setdefault(ppid, []).append(pid)
    user = system = 0.0
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            user += stats[pid][1]
            system += stats[pid][2]
        todo.extend(children.get(pid, ()))
    return user, system


# --- the run -----------------------------------------------------------------------

@dataclass
class Result:
    socket: str
    connections: int
    messages: int
    errors: int
    seconds: float
    msg_per_s: float
    p50_ms: float
    p99_ms: float
    milter_cpu_ms_per_msg: float | None
    milter_user_ms_per_msg: float | None
    milter_sys_ms_per_msg: float | None
    driver_cpu_ms_per_msg: float


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(spec: str, connections: int, messages: int, per_conn: int = 1,
        warmup: int = 200, milter_pid: int | None = None) -> Result:
    parsed = parse_socket_spec(spec)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(connections + 1)
    share = [messages // connections + (1 if i < messages % connections else 0)
             for i in range(connections)]
    procs, pipes = [], []
    for i in range(connections):
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(parsed.family, parsed.address, share[i],
                                              per_conn, warmup // connections, barrier, w),
                        daemon=True)
        p.start()
        w.close()
        procs.append(p)
        pipes.append(r)
    barrier.wait(timeout=120)  # every driver process has warmed up
    cpu0 = tree_cpu_split(milter_pid) if milter_pid else (0.0, 0.0)
    t0 = time.perf_counter()
    results: list[WorkerResult] = []
    for r in pipes:
        results.append(r.recv())
    seconds = time.perf_counter() - t0
    cpu1 = tree_cpu_split(milter_pid) if milter_pid else (0.0, 0.0)
    for p in procs:
        p.join()
    latencies: list[float] = []
    for res in results:
        lat: array[float] = array("d")
        lat.frombytes(res.latencies)
        latencies.extend(lat)
    done = len(latencies)
    errors = sum(res.errors for res in results)

    def per_msg(seconds: float) -> float | None:
        return round(seconds * 1000 / done, 4) if milter_pid and done else None

    return Result(
        socket=spec, connections=connections, messages=done, errors=errors,
        seconds=round(seconds, 3), msg_per_s=round(done / seconds, 1),
        p50_ms=round(percentile(latencies, 0.50) * 1000, 3),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 3),
        milter_cpu_ms_per_msg=per_msg(sum(cpu1) - sum(cpu0)),
        milter_user_ms_per_msg=per_msg(cpu1[0] - cpu0[0]),
        milter_sys_ms_per_msg=per_msg(cpu1[1] - cpu0[1]),
        driver_cpu_ms_per_msg=round(sum(res.cpu for res in results) * 1000 / max(done, 1), 4),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("socket", help="milter socket: inet:PORT@HOST or unix:/path")
    parser.add_argument("--connections", type=int, default=1,
                        help="concurrent milter connections, one driver process each")
    parser.add_argument("--messages", type=int, default=5000, help="timed messages in all")
    parser.add_argument("--per-connection", type=int, default=1,
                        help="messages per milter connection (Postfix+smtp-source: 1)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed messages first")
    parser.add_argument("--milter-pid", type=int, help="read this process tree's CPU time")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run(args.socket, args.connections, args.messages, args.per_connection,
                 args.warmup, args.milter_pid)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        for key, value in asdict(result).items():
            print(f"{key:24} {value}")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
