"""NSD, the authoritative DNS server, on loopback with a test zone (TESTBED.md).

:class:`Nsd` writes ``nsd.conf`` and one zone file per zone into a
temporary directory, runs ``nsd -d`` and waits until it answers the SOA of
every zone; :meth:`Nsd.stop` ends it.  A failure to start raises
:class:`NsdError` with the end of NSD's log.  Like every daemon of the test
bed it may only run inside the private network namespace (``./test.sh``,
``scripts/lib.sh run_in_netns``): the session fixture :func:`nsd` skips
elsewhere.

:func:`default_zones` is the zone the SPF tests and the end-to-end tests
share: one domain per SPF result for the client :data:`CLIENT_IP`
(``198.51.100.66``, PTR ``mail.pass.test``), every domain with an MX to
``mx.sink.test`` = :data:`SINK_IP` (``127.0.0.25``, where the SMTP sink of
the CBV/DSN tests listens on port 25).  bms is pointed at it with
``[dns] nameservers = 127.0.0.1:5353`` (:data:`NAMESERVER`).

In a conftest.py::

    from testbed.nsd import nsd  # noqa: F401 - the session fixture
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from .milter import free_port
from .waiting import tail, wait_for

NSD = shutil.which("nsd") or "/usr/sbin/nsd"

HOST = "127.0.0.1"
PORT = 5353
NAMESERVER = f"{HOST}:{PORT}"  # for [dns] nameservers

CLIENT_IP = "198.51.100.66"  # the SMTP client; PTR mail.pass.test, A of it too
CLIENT_PTR = "mail.pass.test"  # not "client...": that word looks dynamic
CLIENT6_IP = "2001:db8::66"  # the same client over IPv6 (SPF evaluation only)
CLIENT6_PTR = "mail6.pass.test"
DYN_IP = "198.51.100.67"  # PTR dyn-198-51-100-67.pool.isp.test: a dynamic-looking name
DYN_PTR = "dyn-198-51-100-67.pool.isp.test"
NOPTR_IP = "198.51.100.68"  # no PTR at all
FORWARDER_IP = "198.51.100.77"  # passes SPF for forwarder.test (trusted_forwarder tests)
OTHER_IP = "192.0.2.1"  # the only address the fail/softfail/neutral records allow
SINK_IP = "127.0.0.25"  # mx.sink.test: the SMTP sink for CBV/DSN
SINK_HOST = "mx.sink.test"
LAME_NS_IP = "127.0.0.9"  # where temperror.test is delegated: nothing listens there
INTERNAL_IP = "10.11.12.13"  # a host of the local network (internal_connect in e2e tests)
# Added to ``lo`` in the test namespace, so SMTP clients can connect from
# them: a real outside address is neither loopback nor "localhost" to bms.
LOCAL_ADDRESSES = (CLIENT_IP, DYN_IP, NOPTR_IP, FORWARDER_IP, INTERNAL_IP)

# The SPF result each sender domain gives for CLIENT_IP (and CLIENT6_IP).
SPF_RESULTS: dict[str, str] = {
    "pass.test": "pass",
    "fail.test": "fail",
    "softfail.test": "softfail",
    "neutral.test": "neutral",
    "cbv.softfail.test": "softfail",
    "err.neutral.test": "neutral",
    "slow.neutral.test": "neutral",
    "none.test": "none",
    "permerror.test": "permerror",
    "laxpass.test": "permerror",  # lax result pass (x-bestguess=pass) + permerror DSN
    "temperror.test": "temperror",
    "include.test": "pass",  # include:pass.test
    "split.test": "pass",  # the record in two TXT strings
    "tworecords.test": "permerror",  # two v=spf1 records
    "guess.test": "none",  # no SPF; best guess (a/24) passes
    "nomx.test": "none",  # no SPF, no MX, no A: best guess neutral
    "delegated.test": "none",  # no SPF; with delegate=delegate.test: pass
    "forwarder.test": "fail",  # passes only FORWARDER_IP
    "nxdomain.test": "none",  # the domain does not exist
}

ZoneRecords = Sequence[str]


def default_zones() -> dict[str, list[str]]:
    """The shared test zones: zone name -> zone-file lines (relative names are
    relative to the zone; SOA and NS are added by :class:`Nsd` when missing)."""
    mx = f"MX 10 {SINK_HOST}."
    test = [
        f"ns A {HOST}",
        f"mx.sink A {SINK_IP}",
        "sink " + mx,
        # one domain per SPF result
        'pass TXT "v=spf1 ip4:198.51.100.66 ip6:2001:db8::66 -all"',
        "pass " + mx,
        f"mail.pass A {CLIENT_IP}",
        f"mail.pass AAAA {CLIENT6_IP}",
        f"mail6.pass AAAA {CLIENT6_IP}",
        f'fail TXT "v=spf1 ip4:{OTHER_IP} -all"',
        "fail " + mx,
        f'softfail TXT "v=spf1 ip4:{OTHER_IP} ~all"',
        "softfail " + mx,
        f'neutral TXT "v=spf1 ip4:{OTHER_IP} ?all"',
        "neutral " + mx,
        # more of the same results, for per-domain access keys (e2e tests)
        f'cbv.softfail TXT "v=spf1 ip4:{OTHER_IP} ~all"',
        "cbv.softfail " + mx,
        f'err.neutral TXT "v=spf1 ip4:{OTHER_IP} ?all"',
        "err.neutral " + mx,
        f'slow.neutral TXT "v=spf1 ip4:{OTHER_IP} ?all"',
        "slow.neutral " + mx,
        'none TXT "not an SPF record"',
        "none " + mx,
        'permerror TXT "v=spf1 ip4:127.0.0.266 -all"',  # not an address
        # an unknown mechanism: permerror, but pyspf's lax result is pass
        'laxpass TXT "v=spf1 ip4:198.51.100.66 ip6:2001:db8::66 moo -all"',
        "laxpass " + mx,
        "permerror " + mx,
        # A referral to a server where nothing listens: no answer can be had.
        "temperror NS ns.lame.test.",
        f"ns.lame A {LAME_NS_IP}",
        'include TXT "v=spf1 include:pass.test -all"',
        "include " + mx,
        'split TXT "v=spf1 ip4:198.51.100.66" " ip6:2001:db8::66 -all"',
        "split " + mx,
        'tworecords TXT "v=spf1 ip4:198.51.100.66 -all"',
        'tworecords TXT "v=spf1 -all"',
        "tworecords " + mx,
        f"guess A {CLIENT_IP}",
        # no SPF and no MX: the best guess (a/24 mx/24) is neutral.  (An MX to
        # mx.sink.test makes "mx/24" pass: the sink shares 127.0.0.0/24.)
        'nomx TXT "no SPF here"',
        "guess " + mx,
        "delegated " + mx,
        'delegated.test._spf.delegate TXT "v=spf1 ip4:198.51.100.66 -all"',
        f'forwarder TXT "v=spf1 ip4:{FORWARDER_IP} -all"',
        # HELO names: a valid one (A = client), one with its own SPF pass, a bad one
        f"helo-a A {CLIENT_IP}",
        'helo-spf TXT "v=spf1 ip4:198.51.100.64/28 -all"',  # the client, DYN_IP, NOPTR_IP
        f"helo-bad A {OTHER_IP}",
        f'helo-fail TXT "v=spf1 ip4:{OTHER_IP} -all"',
        f"{DYN_PTR.removesuffix('.test')} A {DYN_IP}",
        # for the resolver tests: TTLs, CNAME chains, null MX
        'ttl60 60 TXT "short-lived"',
        "alias CNAME pass.test.",
        "alias2 CNAME alias.test.",
        "loop1 CNAME loop2.test.",
        "loop2 CNAME loop1.test.",
        "nullmx MX 0 .",
    ]
    return {
        "test": test,
        "127.in-addr.arpa": [
            "1.0.0 PTR localhost.",
            f"25.0.0 PTR {SINK_HOST}.",
        ],
        "100.51.198.in-addr.arpa": [
            f"66 PTR {CLIENT_PTR}.",
            f"67 PTR {DYN_PTR}.",
        ],
        # 2001:db8::/32
        "8.b.d.0.1.0.0.2.ip6.arpa": [
            "6.6." + ".".join("0" * 22) + f" PTR {CLIENT6_PTR}.",
        ],
    }


class NsdError(RuntimeError):
    """NSD could not be configured or started; the message has its log."""


def zone_text(zone: str, records: ZoneRecords, ttl: int = 300) -> str:
    """A zone file: ``$ORIGIN``, ``$TTL``, an SOA and NS unless given, the records."""
    origin = zone.rstrip(".") + "."
    lines = [f"$ORIGIN {origin}", f"$TTL {ttl}"]
    has = {kind: any(f" {kind} " in f" {r} " for r in records) for kind in ("SOA", "NS")}
    if not has["SOA"]:
        # serial refresh retry expire minimum (the negative-answer TTL: 60 s)
        lines.append("@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60")
    if not any(r.startswith(("@ ", f"{origin} ")) and " NS " in f" {r} " for r in records):
        lines.append("@ IN NS ns.test.")
    lines.extend(records)
    return "\n".join(lines) + "\n"


class Nsd:
    """One NSD process serving ``zones`` on ``host:port`` (UDP and TCP)."""

    def __init__(self, zones: Mapping[str, ZoneRecords] | None = None, *,
                 host: str = HOST, port: int = PORT, directory: str | None = None,
                 extra_ports: Sequence[int] = ()) -> None:
        self.zones = dict(default_zones() if zones is None else zones)
        self.host = host
        self.port = port
        # More ports to answer on: 53 makes NSD the resolver of resolv.conf
        # in the namespace, so the MTAs find the PTR names of the test clients.
        self.extra_ports = tuple(extra_ports)
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="bms-nsd-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def nameserver(self) -> str:
        """``IP:PORT``, for ``[dns] nameservers`` and ``DnsSettings``."""
        return f"{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.dir / "nsd.log"

    def configure(self) -> Path:
        d = self.dir
        (d / "xfr").mkdir(parents=True, exist_ok=True)
        conf = [
            "server:",
            f"  ip-address: {self.host}@{self.port}",
            *[f"  ip-address: {self.host}@{p}" for p in self.extra_ports],
            "  do-ip4: yes",
            f"  do-ip6: {'yes' if ':' in self.host else 'no'}",
            '  username: ""',
            '  chroot: ""',
            f'  zonesdir: "{d}"',
            '  database: ""',
            f'  zonelistfile: "{d}/zone.list"',
            f'  xfrdfile: "{d}/xfrd.state"',
            f'  xfrdir: "{d}/xfr"',
            f'  pidfile: "{d}/nsd.pid"',
            f'  logfile: "{self.log_file}"',
            "  server-count: 1",
            "  verbosity: 1",
            "  hide-version: yes",
            "remote-control:",
            "  control-enable: no",
        ]
        for zone, records in self.zones.items():
            name = zone.rstrip(".")
            fname = f"{name}.zone"
            (d / fname).write_text(zone_text(name, records))
            conf += ["zone:", f"  name: {name}", f"  zonefile: {fname}"]
        path = d / "nsd.conf"
        path.write_text("\n".join(conf) + "\n")
        check = subprocess.run([NSD + "-checkconf", str(path)], capture_output=True,
                               text=True, check=False)
        if check.returncode != 0:
            raise NsdError(f"nsd-checkconf {path}: {check.stdout}{check.stderr}")
        for zone in self.zones:
            name = zone.rstrip(".")
            check = subprocess.run([NSD + "-checkzone", name, str(d / f"{name}.zone")],
                                   capture_output=True, text=True, check=False)
            if check.returncode != 0:
                raise NsdError(f"zone {name}: {check.stdout}{check.stderr}\n"
                               + (d / f"{name}.zone").read_text())
        return path

    def start(self, timeout: float = 10.0) -> Nsd:
        conf = self.configure()
        self.proc = subprocess.Popen([NSD, "-d", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_for(self._answers_all, timeout, f"NSD on {self.nameserver} to serve "
                     + ", ".join(self.zones), interval=0.05, detail=self._detail)
        except BaseException as exc:
            detail = self._detail()
            self.stop()
            raise NsdError(f"NSD did not start: {exc}\n{detail}") from None
        return self

    def _answers_all(self) -> bool:
        return all(self._answers(zone) for zone in self.zones)

    def _answers(self, zone: str) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise NsdError(f"NSD exited with status {self.proc.returncode}")
        q = dns.message.make_query(zone.rstrip(".") + ".", "SOA")
        try:
            r = dns.query.udp(q, self.host, port=self.port, timeout=0.2)
        except (OSError, dns.exception.DNSException):
            return False
        return r.rcode() == dns.rcode.NOERROR and bool(r.flags & dns.flags.AA) \
            and bool(r.answer)

    def _detail(self) -> str:
        out = ""
        if self.proc is not None and self.proc.poll() is not None and self.proc.stdout:
            out = self.proc.stdout.read().decode("utf-8", "replace")
        return (f"--- nsd output ---\n{out}\n" if out else "") + tail(str(self.log_file))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            if proc.stdout:
                proc.stdout.close()
        if self._own_dir and os.environ.get("BMS_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Nsd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def nsd_with(records: Sequence[str]) -> Nsd:
    """An NSD of a test module's own, on a free port: the shared test zones
    plus ``records`` in the ``test`` zone (use it as a context manager).
    The session NSD on 5353 is left as it is."""
    zones = default_zones()
    zones["test"] += records
    return Nsd(zones, port=free_port())


@pytest.fixture(scope="session")
def nsd() -> Iterator[Nsd]:
    """NSD on 127.0.0.1:5353 serving :func:`default_zones`, for the whole session
    (skipped outside the private network namespace)."""
    from .pytest_plugin import require_netns

    require_netns()
    add_local_addresses(LOCAL_ADDRESSES)
    with Nsd(extra_ports=(53,)) as server:
        yield server


def add_local_addresses(addresses: Sequence[str]) -> None:
    """Put ``addresses`` on ``lo`` (only inside the private namespace)."""
    from .pytest_plugin import require_netns

    require_netns()
    have = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                          text=True, check=True).stdout
    for ip in addresses:
        if f" {ip}/" not in have:
            prefix = 128 if ":" in ip else 32
            subprocess.run(["ip", "addr", "add", f"{ip}/{prefix}", "dev", "lo"], check=True)


__all__ = [
    "CLIENT6_IP",
    "CLIENT6_PTR",
    "CLIENT_IP",
    "CLIENT_PTR",
    "DYN_IP",
    "DYN_PTR",
    "FORWARDER_IP",
    "INTERNAL_IP",
    "LAME_NS_IP",
    "LOCAL_ADDRESSES",
    "NAMESERVER",
    "NOPTR_IP",
    "OTHER_IP",
    "SINK_HOST",
    "SINK_IP",
    "SPF_RESULTS",
    "Nsd",
    "NsdError",
    "add_local_addresses",
    "default_zones",
    "nsd",
    "nsd_with",
    "zone_text",
]
