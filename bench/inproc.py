"""The full bms policy in one process, for a developer's loop: no MTA, no
sockets, no DNS server; threads instead of MTA connections.

Each message is what Postfix sends bms for the typical message of the policy
part (``bench/policy.py``: 35 KB, text + HTML + a PDF) from 198.51.100.66,
MAIL FROM bench@pass.test: the packets (OPTNEG, the macros, CONNECT ... EOM,
QUIT) fed to a fresh :class:`Milter.context.Context` with a fresh
``BmsMilter``, as one milter connection per message.  The policy is the real
one: the sample ``pymilter.cfg`` plus the bench overlay, the real SQLite
store and log file in a scratch directory, DMARC (pass.test publishes
``p=reject``), defang with ``scan_zip``.  DNS answers come from a table
(``tests/unit/spf_fakes.py``), so what is measured is bms's own CPU: the
policy, the framework's decode and dispatch, the store and the log.

``--threads N`` runs N threads at once, each its own messages, as N MTA
connections are served: what the GIL hand-offs of the store and the log
cost shows in the CPU per message, and more steadily in ``futex`` calls per
message under ``strace -f -c`` (the CPU time of a loaded 2-core VM varies by
a third between runs; the system call counts do not).

    .venv/bin/python bench/inproc.py [--threads 10] [--messages 300] [--repeats 5]
        [--signed] [--profile] [--workdir DIR]

Prints the CPU time (``time.process_time``) per message: the least and the
median of the repeats.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT / "bench", ROOT / "tests", ROOT):  # this tree's code, not an installed one
    sys.path.insert(0, str(extra))

import policy as bench_policy  # noqa: E402
from driver import OPTNEG  # noqa: E402
from unit.spf_fakes import ZoneResolver  # noqa: E402

import Milter  # noqa: E402
from bmslib.config import load_config  # noqa: E402
from bmslib.log import setup_logging  # noqa: E402
from bmslib.milter import BmsMilter  # noqa: E402
from bmslib.runtime import Runtime, build_runtime  # noqa: E402
from Milter import lowlevel  # noqa: E402
from Milter.context import Context  # noqa: E402
from Milter.protocol import commands as cmd  # noqa: E402
from Milter.protocol import constants as C  # noqa: E402
from Milter.protocol.framing import FrameDecoder  # noqa: E402

CLIENT = bench_policy.CLIENT_IP
HELO = bench_policy.HELO.encode()
QUEUE_ID = b"4XbBmS0QzHz1b"
ZONE: dict[tuple[str, str], list[object]] = {
    ("pass.test", "TXT"): [f"v=spf1 ip4:{CLIENT} -all"],
    (CLIENT, "PTR"): [bench_policy.HELO],
    (bench_policy.HELO, "A"): [CLIENT],
    ("_dmarc.pass.test", "TXT"): ["v=DMARC1; p=reject"],
}


def macro(stage: str, *pairs: tuple[bytes, bytes]) -> bytes:
    return cmd.Macro(ord(stage), tuple(pairs)).encode()


def split_message(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Header fields (name, value with its folding) and body of a CRLF message,
    with the Received field Postfix adds first."""
    head, _, body = raw.partition(b"\r\n\r\n")
    head = (b"Received: from " + HELO + b" (" + HELO + b" [" + CLIENT.encode() + b"])\r\n"
            b"\tby mx.example.test (Postfix) with ESMTP id " + QUEUE_ID + b"\r\n"
            b"\tfor <rcpt@example.test>; Mon, 24 Nov 2025 18:00:00 +0000 (UTC)\r\n") + head
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        else:
            name, _, value = line.partition(b":")
            fields.append((name, value.lstrip(b" ")))
    return fields, body


def packets_for(raw: bytes, protocol: int) -> list[bytes]:
    """What Postfix sends for one message on its own connection, after OPTNEG,
    skipping the stages the milter asked not to see."""
    fields, body = split_message(raw)
    stages: list[tuple[bytes, bytes, int]] = [
        (macro("C", (b"j", b"mx.example.test"), (b"{daemon_name}", b"mx.example.test"),
               (b"v", b"Postfix 3.7.11"), (b"_", HELO + b" [" + CLIENT.encode() + b"]")),
         cmd.Connect(HELO, C.SMFIA_INET, 41000, CLIENT).encode(), C.SMFIP_NOCONNECT),
        (b"", cmd.Helo(HELO).encode(), C.SMFIP_NOHELO),
        (macro("M", (b"{mail_addr}", bench_policy.SENDER.encode())),
         cmd.Mail((b"<" + bench_policy.SENDER.encode() + b">", b"SIZE=40000")).encode(),
         C.SMFIP_NOMAIL),
        (macro("R", (b"i", QUEUE_ID), (b"{rcpt_addr}", bench_policy.RECIPIENT.encode())),
         cmd.Rcpt((b"<" + bench_policy.RECIPIENT.encode() + b">",)).encode(), C.SMFIP_NORCPT),
        (macro("T", (b"i", QUEUE_ID)), cmd.Data().encode(), C.SMFIP_NODATA),
        *((b"", cmd.Header(n, v).encode(), C.SMFIP_NOHDRS) for n, v in fields),
        (macro("N", (b"i", QUEUE_ID)), cmd.EndOfHeaders().encode(), C.SMFIP_NOEOH),
        *((b"", cmd.Body(body[i:i + 65535]).encode(), C.SMFIP_NOBODY)
          for i in range(0, len(body), 65535)),
        (macro("E", (b"i", QUEUE_ID)), cmd.EndOfMessage().encode(), 0),
    ]
    out = [OPTNEG]
    out += [m + packet for m, packet, skip in stages if not (skip and protocol & skip)]
    return [*out, cmd.Quit().encode()]


def build(workdir: Path, signed: bool) -> tuple[Runtime, bytes]:
    configs = bench_policy.bms_config(workdir, "inet:1@127.0.0.1", "127.0.0.1:9")
    zone = dict(ZONE)
    text = bench_policy.typical_message()
    if signed:
        from dkimkeys import keypair
        pem, record = keypair(workdir, "inproc-dkim")
        text = bench_policy.signed_message(text, pem)
        zone[(f"{bench_policy.DKIM_SELECTOR}._domainkey.pass.test", "TXT")] = [record]
    runtime = build_runtime(load_config([str(c) for c in configs]),
                            resolver=ZoneResolver(zone), hostname="mx.example.test")
    setup_logging(str(workdir / "log"))
    return runtime, text.replace("\n", "\r\n").encode()


def registration(runtime: Runtime) -> lowlevel.Registration:
    def make() -> BmsMilter:
        return BmsMilter(runtime.session())
    return lowlevel.Registration(name="bms", callbacks=dict(Milter.glue_callbacks(make)),
                                 registered=True, exception_policy=lowlevel.TEMPFAIL)


def negotiated_protocol(reg: lowlevel.Registration) -> int:
    out: list[bytes] = []
    Context(reg, out.append, "inproc").receive(OPTNEG)
    decoder = FrameDecoder(1 << 24)
    decoder.feed(b"".join(out))
    frame = decoder.next_frame()
    assert frame is not None
    return int(struct.unpack("!III", frame[1][:12])[2])


def replies(reg: lowlevel.Registration, packets: list[bytes]) -> str:
    """The reply codes bms sends for one message, e.g. ``Occcccciic``."""
    out: list[bytes] = []
    context = Context(reg, out.append, "inproc")
    for p in packets:
        context.receive(p)
    decoder = FrameDecoder(1 << 24)
    decoder.feed(b"".join(out))
    codes = ""
    while (frame := decoder.next_frame()) is not None:
        codes += chr(frame[0])
    return codes


def one_message(reg: lowlevel.Registration, packets: list[bytes]) -> Callable[[], None]:
    def discard(data: bytes) -> None:
        pass

    def run() -> None:
        context = Context(reg, discard, "inproc")
        for p in packets:
            context.receive(p)
    return run


def timed(run: Callable[[], None], threads: int, messages: int) -> float:
    """CPU milliseconds per message with ``threads`` threads of ``messages`` each."""
    def loop() -> None:
        for _ in range(messages):
            run()
    pool = [threading.Thread(target=loop) for _ in range(threads)]
    start = time.process_time()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return (time.process_time() - start) / (threads * messages) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--messages", type=int, default=300, help="per thread and repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--signed", action="store_true", help="the DKIM-signed message")
    parser.add_argument("--profile", action="store_true", help="cProfile one thread instead")
    parser.add_argument("--workdir", type=Path, help="keep the store and log here "
                        "(default: a temporary directory, removed at the end)")
    args = parser.parse_args(argv)
    if args.workdir is not None:
        return run(args, args.workdir)
    with tempfile.TemporaryDirectory(prefix="bms-inproc-") as scratch:
        return run(args, Path(scratch))


def run(args: argparse.Namespace, workdir: Path) -> int:
    os.chdir(ROOT)  # the sample's relative paths
    runtime, raw = build(workdir, args.signed)
    reg = registration(runtime)
    packets = packets_for(raw, negotiated_protocol(reg))
    print(f"replies per message: {replies(reg, packets)}")
    message = one_message(reg, packets)
    for _ in range(50):
        message()
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(timed, message, 1, args.messages)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return 0
    per_msg = [timed(message, args.threads, args.messages) for _ in range(args.repeats)]
    print(f"{args.threads} thread(s), {args.messages} messages each, {args.repeats} repeats: "
          f"CPU per message min {min(per_msg):.3f} ms, median {statistics.median(per_msg):.3f} ms")
    runtime.reports.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
