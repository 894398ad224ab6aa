"""Benchmark runner: no milter / pymilter / our Milter, same milter code, same run.

Started by ``bench/run.sh`` inside a private network namespace (the MTAs must
never see the real network).  Three parts, each over an inet and a unix milter
socket:

1. ``bench/driver.py``, the direct protocol driver, at 1, 2 and 4 concurrent
   connections (our milter also with ``workers = 2``);
2. Postfix + ``smtp-source`` at 10 sessions and at 1 session;
3. sendmail ``-bD`` + ``smtp-source`` at 1 session;

and a fourth, ``policy``, over TCP only: the real bms daemon with its full
default policy (SPF against NSD on loopback, defang of a typical 35 KB
message) against our no-op milter, through one Postfix, at 10 sessions and at
1 session (set up by ``bench/policy.py``).

The milter is ``bench/noop_milter.py`` run by each framework's interpreter:
``NoOp`` (every callback overridden, CONTINUE) everywhere, and for the MTA
parts also ``EomOnly`` (only ``eom``: every other stage negotiated away,
which is what exposes the MTA's back-to-back small writes over TCP).

Each measurement is repeated and the median is reported.  The markdown goes to
``bench/results/latest.md`` (and stdout), the raw numbers to ``latest.json``.
Nothing here asserts a timing: the targets are evaluated and printed as
met/missed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import policy  # noqa: E402
from driver import tree_cpu_seconds  # noqa: E402
from mta import BenchPostfix, BenchSendmail  # noqa: E402

MILTER_PORT = 8894
INET_SPEC = f"inet:{MILTER_PORT}@127.0.0.1"
VARIANTS = {
    "noop": "no-op milter (every callback overridden, all return CONTINUE)",
    "eom-only": "eom-only milter (only `eom` overridden: the other stages are negotiated "
                "away with `SMFIP_NO*`)",
}
LABELS = {"none": "no milter", "pymilter": "pymilter", "ours": "ours",
          "ours-w2": "ours, workers=2", "bms": "bms, default policy",
          "bms-dkim": "bms, default policy, DKIM-signed message (DKIM verify, DMARC pass)"}
POLICY_TARGET = 0.85  # issue 15: bms's full policy >= 85 % of its own no-op rate
POLICY_COST_TARGET_MS = 0.8  # issue 15: policy CPU per typical message above the no-op


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cmdline(args: list[str]) -> str:
    return shlex.join(str(a) for a in args)


# --- milter processes --------------------------------------------------------------

@dataclass(frozen=True)
class Impl:
    key: str  # "pymilter", "ours", "ours-w2"
    python: Path
    workers: int = 1


class MilterProcess:
    """One milter process (``bench/noop_milter.py``) on ``spec``."""

    def __init__(self, impl: Impl, spec: str, variant: str, workdir: Path,
                 args: list[str] | None = None) -> None:
        """``args``: another command serving ``spec`` (the bms daemon) instead of
        ``bench/noop_milter.py``."""
        self.impl = impl
        self.spec = spec
        if args is None:
            args = [str(impl.python), str(HERE / "noop_milter.py"), spec]
            if impl.workers != 1:
                args += ["--workers", str(impl.workers)]
            if variant == "eom-only":
                args.append("--eom-only")
        self.args = args
        self.logfile = workdir / f"milter-{impl.key}-{spec.split(':')[0]}-{variant}.log"
        with self.logfile.open("ab") as out:
            # cwd outside the repository: pymilter's interpreter must not find our Milter.
            self.proc = subprocess.Popen(
                self.args, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT,
                umask=0,  # the unix socket must be connectable by Postfix's smtpd (user postfix)
                start_new_session=True)
        self._wait_ready()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _probe(self) -> bool:
        address: str | tuple[str, int]
        if self.spec.startswith("unix:"):
            address = self.spec[5:]
            if not os.path.exists(address):
                return False
            family = socket.AF_UNIX
        else:
            family, address = socket.AF_INET, ("127.0.0.1", MILTER_PORT)
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(address)
            return True
        except OSError:
            return False

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milter exited ({self.proc.returncode}): "
                                   f"{self.logfile.read_text(errors='replace')[-2000:]}")
            if self._probe():
                time.sleep(0.2)  # workers=2: let the forked workers reach accept()
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"milter not listening on {self.spec} after {timeout}s")

    def cpu(self) -> float:
        """CPU seconds of the milter process and its workers so far."""
        return tree_cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                log(f"milter {self.pid} ignored SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait()
        if self.spec.startswith("unix:"):
            try:
                os.unlink(self.spec[5:])
            except FileNotFoundError:
                pass


@contextmanager
def milter(impl: Impl | None, spec: str, variant: str, workdir: Path,
           args: list[str] | None = None) -> Iterator[MilterProcess | None]:
    if impl is None:
        yield None
        return
    proc = MilterProcess(impl, spec, variant, workdir, args)
    try:
        yield proc
    finally:
        proc.stop()


# --- results -------------------------------------------------------------------------

@dataclass
class Measurement:
    part: str  # driver / postfix / sendmail / policy
    variant: str  # noop / eom-only / policy (the milter code); "-" without a milter
    scenario: str  # e.g. "4 connections", "10 sessions"
    impl: str  # none / pymilter / ours / ours-w2 / bms (the daemon, part policy)
    socket: str  # inet / unix / -
    msg_per_s: float
    milter_cpu_ms: float | None
    runs: list[float]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Results:
    measurements: list[Measurement] = field(default_factory=list)
    commands: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    probes: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def add_command(self, part: str, text: str) -> None:
        lines = self.commands.setdefault(part, [])
        if text not in lines:
            lines.append(text)

    def get(self, part: str, variant: str, scenario: str, impl: str,
            sock: str) -> Measurement | None:
        for m in self.measurements:
            if (m.part, m.scenario, m.impl, m.socket) == (part, scenario, impl, sock) \
                    and m.variant in (variant, "-"):
                return m
        return None


# --- part 1: the direct driver -------------------------------------------------------

def run_driver_part(res: Results, impls: dict[str, Impl], specs: dict[str, str],
                    workdir: Path, messages: int, repeats: int) -> None:
    """``repeats`` rounds; each round starts every milter afresh and runs each
    connection count once, so that a slow spell of the machine is spread over
    all configurations instead of hitting one."""
    driver_py = impls["ours"].python
    plan: list[tuple[str, tuple[int, ...]]] = [
        ("pymilter", (1, 2, 4)), ("ours", (1, 2, 4)), ("ours-w2", (2, 4))]
    runs: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for rnd in range(repeats):
        log(f"driver round {rnd + 1}/{repeats}")
        for sock, spec in specs.items():
            for key, conns in plan:
                with milter(impls[key], spec, "noop", workdir) as proc:
                    assert proc is not None
                    res.add_command("milters", cmdline(proc.args))
                    for n in conns:
                        args = [str(driver_py), str(HERE / "driver.py"), spec, "--connections",
                                str(n), "--messages", str(messages), "--milter-pid", "PID",
                                "--json"]
                        res.add_command("driver", cmdline(args))
                        args[args.index("PID")] = str(proc.pid)
                        out = subprocess.run(args, capture_output=True, text=True, check=False)
                        if out.returncode != 0:
                            res.problems.append(f"driver {key} {sock} {n}: rc={out.returncode} "
                                                f"{out.stderr.strip()[-500:]}")
                        if out.stdout.strip():
                            runs.setdefault((key, sock, n), []).append(json.loads(out.stdout))
    for (key, sock, n), results in runs.items():
        res.measurements.append(driver_measurement(key, sock, n, results))


def driver_measurement(key: str, sock: str, n: int, runs: list[dict[str, Any]]) -> Measurement:
    def med(name: str) -> float:
        return float(statistics.median(float(r[name]) for r in runs))

    m = Measurement(
        "driver", "noop", f"{n} connections", key, sock, round(med("msg_per_s"), 1),
        round(med("milter_cpu_ms_per_msg"), 4), [r["msg_per_s"] for r in runs],
        {"p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
         "driver_cpu_ms_per_msg": med("driver_cpu_ms_per_msg"),
         "milter_user_ms": med("milter_user_ms_per_msg"),
         "milter_sys_ms": med("milter_sys_ms_per_msg"),
         "milter_cpu_runs": [r["milter_cpu_ms_per_msg"] for r in runs],
         "messages": runs[0]["messages"], "errors": sum(r["errors"] for r in runs)})
    log(f"driver {LABELS[key]:>15} {sock} x{n}: {m.msg_per_s:8.1f} msg/s  "
        f"p50 {m.extra['p50_ms']:.3f} ms  p99 {m.extra['p99_ms']:.3f} ms  "
        f"milter CPU {m.milter_cpu_ms:.3f} ms/msg  "
        f"driver CPU {m.extra['driver_cpu_ms_per_msg']:.3f} ms/msg")
    return m


# --- parts 2 and 3: smtp-source through an MTA -----------------------------------------

def smtp_source(sessions: int, messages: int, port: int) -> list[str]:
    return ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", "512",
            "-f", "bench@example.net", "-t", "rcpt@example.test", "-M", "client.example.net",
            f"127.0.0.1:{port}"]


def timed_source(args: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=900)
    seconds = time.perf_counter() - t0
    problem = ""
    if out.returncode != 0 or out.stderr.strip():
        problem = f"rc={out.returncode} {out.stderr.strip()[-500:]}"
    return seconds, problem


STALL_SECONDS = 0.030  # a delayed ACK is ~40 ms on Linux


@dataclass
class StallReport:
    messages: int
    stalls: int
    patterns: dict[str, int]  # what came before a stall, and after -> how often

    def text(self) -> str:
        if not self.stalls:
            return f"0 stalls ({self.messages} msgs)"
        top = "; ".join(f"{n}x {p}" for p, n in sorted(self.patterns.items(),
                                                          key=lambda kv: -kv[1])[:3])
        return (f"{self.stalls / self.messages:.1f} stalls/msg ({self.stalls} in "
                f"{self.messages} msgs): {top}")


def stall_probe(args: list[str], messages: int, workdir: Path) -> StallReport | None:
    """Run ``args`` (smtp-source) under ``tcpdump -i lo`` on the milter port and
    count gaps of 30 ms or more inside milter connections, with what came before."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        return None
    pcap = workdir / "stalls.pcap"
    # --immediate-mode: without it packets reach tcpdump in ring-buffer blocks, and
    # those of a short run may never be written.
    dump = subprocess.Popen([tcpdump, "-i", "lo", "--immediate-mode", "-U", "-n", "-w", str(pcap),
                             f"tcp port {MILTER_PORT}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert dump.stderr is not None
        dump.stderr.readline()  # "listening on lo ..."
        timed_source(args)
        time.sleep(0.2)
    finally:
        dump.terminate()
        dump.wait()
    text = subprocess.run([tcpdump, "-r", str(pcap), "-n", "-tt"], capture_output=True,
                          text=True, check=False).stdout
    pcap.unlink(missing_ok=True)
    last: dict[tuple[str, str], tuple[float, str]] = {}
    stalls, patterns = 0, dict[str, int]()
    for line in text.splitlines():
        f = line.split()
        if len(f) < 5 or f[1] != "IP":
            continue
        t, src, dst = float(f[0]), f[2], f[4].rstrip(":")
        side = "milter" if src.endswith(f".{MILTER_PORT}") else "MTA"
        flags = line.split("Flags [", 1)[1].split("]", 1)[0] if "Flags [" in line else "?"
        what = f"{side} [{flags}] {line.rsplit('length ', 1)[-1]} B"
        conn = (min(src, dst), max(src, dst))
        prev = last.get(conn)
        if prev is not None and t - prev[0] >= STALL_SECONDS:
            stalls += 1
            key = f"{prev[1]}, then {what} after ~{round((t - prev[0]) * 100) * 10} ms"
            patterns[key] = patterns.get(key, 0) + 1
        last[conn] = (t, what)
    return StallReport(messages, stalls, patterns)


@dataclass
class MtaPart:
    """How one MTA is driven by :func:`run_smtp_part`."""

    name: str  # postfix / sendmail
    scenarios: list[tuple[int, int]]  # (sessions, messages)
    port_of: Callable[[str], int]  # socket kind (none/inet/unix) -> SMTP port
    before: Callable[[str | None], None]  # configure the MTA for a milter spec, or none
    after: Callable[[], None]  # clean up after one milter configuration
    settle: Callable[[], None]  # after each smtp-source run (Postfix: drain the queue)
    slow: Callable[[str, str, float], bool] = lambda _i, _s, _r: False


def run_smtp_part(res: Results, mta: MtaPart, impls: dict[str, Impl], specs: dict[str, str],
                  workdir: Path, repeats: int, variants: list[str]) -> None:
    """``repeats`` rounds over every configuration (milter and MTA restarted each
    time); then a stall probe per milter over TCP."""
    configs: list[tuple[str, str, str]] = [("none", "-", "-")] + [
        (key, sock, variant) for variant in variants for key in ("pymilter", "ours")
        for sock in ("inet", "unix")]
    samples: dict[tuple[str, str, str, int], list[tuple[float, float | None, int]]] = {}
    for rnd in range(repeats + 1):  # the last round: stall probes only
        probing = rnd == repeats
        if not probing:
            log(f"{mta.name} round {rnd + 1}/{repeats}")
        for key, sock, variant in configs:
            if probing and (key == "none" or sock != "inet"):
                continue
            impl = impls[key] if key != "none" else None
            spec = specs[sock] if impl is not None else ""
            with milter(impl, spec, variant, workdir) as proc:
                if proc is not None:
                    res.add_command("milters", cmdline(proc.args))
                mta.before(spec if impl is not None else None)
                port = mta.port_of(sock if impl is not None else "none")
                try:
                    for sessions, count in mta.scenarios:
                        if probing:
                            if sessions == 1:
                                probe_stalls(res, mta, key, variant, port, workdir)
                            continue
                        sample = measure_smtp(res, mta, proc, key, sock, variant, sessions,
                                              count, port)
                        if sample is not None:
                            samples.setdefault((key, sock, variant, sessions), []).append(sample)
                finally:
                    mta.after()
    for (key, sock, variant, sessions), got in samples.items():
        scenario = f"{sessions} session{'s' if sessions > 1 else ''}"
        cpus = [c for _r, c, _n in got if c is not None]
        m = Measurement(mta.name, variant, scenario, key, sock,
                        statistics.median(r for r, _c, _n in got),
                        round(statistics.median(cpus), 4) if cpus else None,
                        [r for r, _c, _n in got], {"messages": got[0][2]})
        res.measurements.append(m)
        log(f"{mta.name} {key:>8} {sock:4} {variant:8} {scenario:>11}: {m.msg_per_s:8.1f} msg/s"
            + (f"  milter CPU {m.milter_cpu_ms:.3f} ms/msg" if m.milter_cpu_ms is not None
               else ""))
    for m in res.measurements:
        probe = res.probes.get((mta.name, m.impl, m.variant))
        if m.part == mta.name and m.socket == "inet" and m.scenario == "1 session" and probe:
            m.extra["stalls"] = probe


def probe_stalls(res: Results, mta: MtaPart, key: str, variant: str, port: int,
                 workdir: Path) -> None:
    warm_seconds, _problem = timed_source(smtp_source(1, 4, port))
    probe_n = 10 if mta.slow(key, "inet", 4 / max(warm_seconds, 1e-6)) else 50
    probe = smtp_source(1, probe_n, port)
    res.add_command(f"{mta.name} stall probe",
                    f"tcpdump -i lo --immediate-mode -U -n -w stalls.pcap tcp port {MILTER_PORT}"
                    f" & {cmdline(probe)}")
    report = stall_probe(probe, probe_n, workdir)
    mta.settle()
    if report is not None:
        res.probes[(mta.name, key, variant)] = report.text()
        log(f"{mta.name} {key:>8} inet {variant}: stall probe: {report.text()}")


def measure_smtp(res: Results, mta: MtaPart, proc: MilterProcess | None, key: str, sock: str,
                 variant: str, sessions: int, count: int,
                 port: int) -> tuple[float, float | None, int] | None:
    """One timed smtp-source run after a warm-up: (msg/s, milter CPU ms/msg, count)."""
    warm_seconds, problem = timed_source(smtp_source(sessions, 4 * sessions, port))
    mta.settle()
    if problem:
        res.problems.append(f"{mta.name} warm-up {key} {sock} {variant}: {problem}")
    # A configuration that stalls (pymilter over TCP) gets a tenth of the messages.
    if mta.slow(key, sock, 4 * sessions / max(warm_seconds, 1e-6)):
        count = max(10, count // 10)
    args = smtp_source(sessions, count, port)
    res.add_command(mta.name, cmdline(args))
    cpu0 = proc.cpu() if proc else 0.0
    seconds, problem = timed_source(args)
    cpu1 = proc.cpu() if proc else 0.0
    mta.settle()
    if problem:
        res.problems.append(f"{mta.name} {key} {sock} {variant} -s {sessions}: {problem}")
        return None
    return (round(count / seconds, 1), (cpu1 - cpu0) * 1000 / count if proc else None, count)


# --- part 4: bms's full default policy against its own no-op milter, via Postfix ------

POLICY_CONFIGS = (("none", "-"), ("pymilter", "noop"), ("ours", "noop"), ("bms", "policy"),
                  ("bms-dkim", "policy+dkim"))


def run_policy_part(res: Results, impls: dict[str, Impl], workdir: Path,
                    scenarios: list[tuple[int, int]], repeats: int) -> None:
    """``repeats`` rounds of: no milter, bench/noop_milter.py on pymilter and on
    our Milter, the bms daemon (``bench/policy.py``), each restarted per round, through one
    Postfix whose smtpd listens on CLIENT_IP; smtp-source sends the typical
    message from CLIENT_IP with a sender whose SPF passes."""
    with policy.policy_bed(workdir, f"inet:127.0.0.1:{MILTER_PORT}") as bed:
        configs = policy.bms_config(workdir / "bms-policy", INET_SPEC, bed.nsd.nameserver)
        bms_args = policy.bms_command(impls["ours"].python, configs)
        bms_impl = Impl("bms", impls["ours"].python)
        res.add_command("policy", f"# NSD on {bed.nsd.nameserver} and :53 (tests/testbed/nsd.py "
                        f"default_zones); {policy.CLIENT_IP} on lo; Postfix smtpd on "
                        f"{policy.CLIENT_IP}: port {bed.ports['none']} no milter, "
                        f"{bed.ports['milter']} milter {INET_SPEC}")
        res.add_command("policy", f"# message file: {bed.message_bytes} bytes on the wire "
                        "(bench/policy.py typical_message); bms config: pymilter.cfg + "
                        "overlay:")
        res.add_command("policy", "#   " + configs[-1].read_text().strip()
                        .replace(str(workdir), "$WORKDIR").replace("\n", "\n#   "))
        samples: dict[tuple[str, int], list[tuple[float, float | None, int]]] = {}
        for rnd in range(repeats):
            log(f"policy round {rnd + 1}/{repeats}")
            for key, variant in POLICY_CONFIGS:
                bms = key.startswith("bms")
                impl = None if key == "none" else bms_impl if bms else impls[key]
                args = bms_args if bms else None
                with milter(impl, INET_SPEC, variant, workdir, args) as proc:
                    if proc is not None:
                        res.add_command("milters", cmdline(proc.args))
                    kind = "none" if proc is None else "milter"
                    for sessions, count in scenarios:
                        sample = measure_policy(res, bed, proc, key, kind, sessions, count)
                        if sample is not None:
                            samples.setdefault((key, sessions), []).append(sample)
                    if bms and proc is not None:
                        check_bms_log(res, workdir / "bms-policy" / "log" / "milter.log",
                                      signed=key == "bms-dkim")
    variants = dict(POLICY_CONFIGS)
    for (key, sessions), got in samples.items():
        scenario = f"{sessions} session{'s' if sessions > 1 else ''}"
        cpus = [c for _r, c, _n in got if c is not None]
        m = Measurement("policy", variants[key], scenario, key, "-" if key == "none" else "inet",
                        statistics.median(r for r, _c, _n in got),
                        round(statistics.median(cpus), 4) if cpus else None,
                        [r for r, _c, _n in got],
                        {"messages": got[0][2], "message_bytes": bed.message_bytes})
        res.measurements.append(m)
        log(f"policy {LABELS[key]:>19} {scenario:>11}: {m.msg_per_s:8.1f} msg/s"
            + (f"  milter CPU {m.milter_cpu_ms:.3f} ms/msg" if m.milter_cpu_ms is not None
               else ""))


def measure_policy(res: Results, bed: policy.PolicyBed, proc: MilterProcess | None, key: str,
                   kind: str, sessions: int,
                   count: int) -> tuple[float, float | None, int] | None:
    """One timed smtp-source run after a warm-up (which also fills bms's DNS
    cache, as on a live server): (msg/s, milter CPU ms/msg, count)."""
    signed = key == "bms-dkim"
    _warm, problem = timed_source(policy.smtp_source(bed, kind, sessions, 4 * sessions,
                                                     signed))
    bed.postfix.wait_idle(300)
    if problem:
        res.problems.append(f"policy warm-up {key} -s {sessions}: {problem}")
    args = policy.smtp_source(bed, kind, sessions, count, signed)
    res.add_command("policy", cmdline(args))
    cpu0 = proc.cpu() if proc else 0.0
    seconds, problem = timed_source(args)
    cpu1 = proc.cpu() if proc else 0.0
    bed.postfix.wait_idle(300)
    if problem:
        res.problems.append(f"policy {key} -s {sessions}: {problem}")
        return None
    return (round(count / seconds, 1), (cpu1 - cpu0) * 1000 / count if proc else None, count)


def check_bms_log(res: Results, logfile: Path, signed: bool = False) -> None:
    """The policy really ran: bms saw the client, SPF passed for the sender,
    DMARC passed (and DKIM, for the signed message), every message was
    accepted, and nothing went wrong."""
    try:
        text = logfile.read_text(errors="replace")
    except OSError as exc:
        res.problems.append(f"policy: no bms log: {exc}")
        return
    wanted: tuple[str, ...] = (f"connect from {policy.HELO} at ({policy.CLIENT_IP},",
              f"SPF: pass policy OK for {policy.SENDER}", "ACCEPT: 1 recipient",
              "DMARC: pass policy=reject header.from=pass.test")
    if signed:
        wanted += (f"DKIM: pass d=pass.test s={policy.DKIM_SELECTOR}",
                   "DMARC: pass policy=reject header.from=pass.test (spf=pass, dkim=pass)")
    for needle in wanted:
        if needle not in text:
            res.problems.append(f"policy: bms never logged {needle!r}")
    for line in text.splitlines():
        if any(bad in line for bad in ("Traceback", "untrapped exception", "internal error",
                                       "REJECT", "TEMPFAIL", "DEFANG")):
            res.problems.append(f"policy: bms log: {line[:300]}")
            break


# --- report --------------------------------------------------------------------------

def _f(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(a: Measurement | None, b: Measurement | None) -> float | None:
    if a is None or b is None or not b.msg_per_s:
        return None
    return a.msg_per_s / b.msg_per_s


def machine_info() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), Linux {platform.release()}"


def render(res: Results, meta: dict[str, str]) -> str:
    out: list[str] = []
    w = out.append
    w("# bms benchmark: no milter / pymilter (libmilter) / our Milter, same milter code")
    w("")
    for k, v in meta.items():
        w(f"- {k}: {v}")
    w("")
    w("Each number is the median of the repeated runs.  CPU is the milter process tree's "
      "utime+stime (`/proc/PID/stat`) per message.  `ours inet / pymilter inet` is the "
      "ratio of the rates.")
    w("")
    render_driver(res, w)
    for part, title in (("postfix", "Postfix + `smtp-source -l 512`, discard transport"),
                        ("sendmail", "sendmail `-bD` + `smtp-source -l 512`, queue only")):
        for variant in VARIANTS:
            render_mta(res, w, part, variant, title)
    render_policy(res, w)
    targets = evaluate_targets(res)
    if targets:
        w("## Targets (SPEC.md §8)")
        w("")
        w("| target | measured | |")
        w("|---|---|---|")
        for name, measured, ok in targets:
            w(f"| {name} | {measured} | {'met' if ok else '**missed**'} |")
        w("")
    w("## Commands")
    w("")
    w("```sh")
    part_order = ["milters", "driver", "postfix", "postfix stall probe", "sendmail",
                  "sendmail stall probe", "policy"]
    for part, lines in sorted(res.commands.items(),
                              key=lambda kv: (part_order.index(kv[0])
                                              if kv[0] in part_order else 99)):
        w(f"# {part}")
        out.extend(lines)
    w("```")
    if res.problems:
        w("")
        w("## Problems during the run")
        w("")
        for p in res.problems:
            w(f"- {p}")
    return "\n".join(out) + "\n"


def render_driver(res: Results, w: Callable[[str], None]) -> None:
    drv = [m for m in res.measurements if m.part == "driver"]
    if not drv:
        return
    w("## Direct protocol driver (`bench/driver.py`), no-op milter")
    w("")
    w("One milter connection per message (OPTNEG, CONNECT .. EOM with Postfix's macros, "
      "ABORT, QUIT), lock step; one driver process per connection.")
    w("")
    w("| milter | socket | connections | msg/s | (min-max) | p50 ms | p99 ms | "
      "milter CPU ms/msg (user+sys) | driver CPU ms/msg |")
    w("|---|---|---|---|---|---|---|---|---|")
    for m in drv:
        w(f"| {LABELS[m.impl]} | {m.socket} | {m.scenario.split()[0]} | "
          f"{_f(m.msg_per_s)} | {_f(min(m.runs))}-{_f(max(m.runs))} | "
          f"{m.extra['p50_ms']:.3f} | {m.extra['p99_ms']:.3f} | "
          f"{_f(m.milter_cpu_ms, 3)} ({m.extra['milter_user_ms']:.2f}+"
          f"{m.extra['milter_sys_ms']:.2f}) | {m.extra['driver_cpu_ms_per_msg']:.3f} |")
    w("")


def render_mta(res: Results, w: Callable[[str], None], part: str, variant: str,
               title: str) -> None:
    rows = [m for m in res.measurements if m.part == part and m.variant in (variant, "-")]
    if not any(m.variant == variant for m in rows):
        return
    w(f"## {title}: {VARIANTS[variant]}")
    w("")
    w("| sessions | no milter | pymilter inet | pymilter unix | ours inet | ours unix | "
      "ours inet / pymilter inet | ours inet / pymilter unix |")
    w("|---|---|---|---|---|---|---|---|")
    order = [("none", "-"), ("pymilter", "inet"), ("pymilter", "unix"), ("ours", "inet"),
             ("ours", "unix")]
    scenarios = list(dict.fromkeys(m.scenario for m in rows))
    for scenario in scenarios:
        cells = {(m.impl, m.socket): m for m in rows if m.scenario == scenario}
        rates = [f"{_f(cells[c].msg_per_s, 1)} msg/s" if c in cells else "-" for c in order]
        r1 = _ratio(cells.get(("ours", "inet")), cells.get(("pymilter", "inet")))
        r2 = _ratio(cells.get(("ours", "inet")), cells.get(("pymilter", "unix")))
        w(f"| {scenario.split()[0]} | {' | '.join(rates)} | {_f(r1, 1)}x | {_f(r2, 3)}x |")
    for scenario in scenarios:
        cells = {(m.impl, m.socket): m for m in rows if m.scenario == scenario}
        cpu = [f"{_f(cells[c].milter_cpu_ms, 2)} ms" if c in cells else "-"
               for c in order[1:]]
        w(f"| {scenario.split()[0]}: milter CPU/msg | | {' | '.join(cpu)} | | |")
    w("")
    stalls = [m for m in rows if "stalls" in m.extra]
    if stalls:
        w("TCP stalls: gaps of 30 ms or more inside a milter connection (`tcpdump -i lo`, "
          "an extra 1-session run):")
        w("")
        for m in stalls:
            w(f"- {LABELS[m.impl]} inet: {m.extra['stalls']}")
        w("")


def render_policy(res: Results, w: Callable[[str], None]) -> None:
    rows = [m for m in res.measurements if m.part == "policy"]
    if not rows:
        return
    size = rows[0].extra.get("message_bytes", 0)
    w("## Postfix + `smtp-source -F` (a typical message) from 198.51.100.66: bms's full "
      "default policy vs its own no-op milter")
    w("")
    w(f"The sender's SPF passes for the client (NSD on 127.0.0.1:5353); the message "
      f"({size:,} bytes: text + HTML, a 20 KB PDF attachment) is parsed and scanned by "
      "defang (`scan_zip` on), nothing in it is banned.  `no-op` is `bench/noop_milter.py` "
      "on our Milter; `bms` is `python -m bms -c pymilter.cfg -c overlay` (commands below); "
      "both serve the same Postfix listener over TCP, one worker.  pass.test publishes "
      "`p=reject`: DMARC passes by aligned SPF; the DKIM-signed run sends the same message "
      "signed by pass.test (rsa-sha256, 1024 bits), verified by bms, DMARC passing by both.")
    w("")
    w("| sessions | no milter | pymilter no-op | no-op milter (min-max) | "
      "bms, default policy (min-max) | bms / no-op | pymilter no-op CPU/msg | no-op CPU/msg | "
      "bms CPU/msg | policy cost/msg | bms, DKIM-signed (min-max) | signed / no-op | "
      "signed CPU/msg |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    def rate(m: Measurement | None) -> str:
        if m is None:
            return "-"
        if len(m.runs) < 2:
            return f"{_f(m.msg_per_s, 1)} msg/s"
        return f"{_f(m.msg_per_s, 1)} msg/s ({_f(min(m.runs))}-{_f(max(m.runs))})"

    def cpu(m: Measurement | None) -> str:
        return f"{_f(m.milter_cpu_ms, 2)} ms" if m is not None else "-"

    for scenario in dict.fromkeys(m.scenario for m in rows):
        cells = {m.impl: m for m in rows if m.scenario == scenario}
        r = _ratio(cells.get("bms"), cells.get("ours"))
        cost = _cost(cells.get("bms"), cells.get("ours"))
        rs = _ratio(cells.get("bms-dkim"), cells.get("ours"))
        w(f"| {scenario.split()[0]} | {rate(cells.get('none'))} | "
          f"{rate(cells.get('pymilter'))} | {rate(cells.get('ours'))} | "
          f"{rate(cells.get('bms'))} | {_f(None if r is None else r * 100)} % | "
          f"{cpu(cells.get('pymilter'))} | {cpu(cells.get('ours'))} | {cpu(cells.get('bms'))} | "
          f"{'-' if cost is None else _f(cost, 2) + ' ms'} | "
          f"{rate(cells.get('bms-dkim'))} | {_f(None if rs is None else rs * 100)} % | "
          f"{cpu(cells.get('bms-dkim'))} |")
    w("")


def _cost(bms: Measurement | None, noop: Measurement | None) -> float | None:
    """The policy's CPU per message above the no-op milter's."""
    if bms is None or noop is None or bms.milter_cpu_ms is None or noop.milter_cpu_ms is None:
        return None
    return bms.milter_cpu_ms - noop.milter_cpu_ms


def evaluate_targets(res: Results) -> list[tuple[str, str, bool]]:
    t: list[tuple[str, str, bool]] = []
    for sock in ("inet", "unix"):
        for n in (1, 2, 4):
            py = res.get("driver", "noop", f"{n} connections", "pymilter", sock)
            ours = res.get("driver", "noop", f"{n} connections", "ours", sock)
            if py and ours and py.milter_cpu_ms and ours.milter_cpu_ms is not None:
                t.append((f"driver {sock}, {n} conn: CPU/msg ours ≤ pymilter",
                          f"{ours.milter_cpu_ms:.3f} vs {py.milter_cpu_ms:.3f} ms "
                          f"({ours.milter_cpu_ms / py.milter_cpu_ms:.2f}x)",
                          ours.milter_cpu_ms <= py.milter_cpu_ms))
        w1 = res.get("driver", "noop", "4 connections", "ours", sock)
        w2 = res.get("driver", "noop", "4 connections", "ours-w2", sock)
        r = _ratio(w2, w1)
        if r is not None:
            t.append((f"driver {sock}, 4 conn: workers=2 ≥ 1.6x workers=1 (msg/s)",
                      f"{r:.2f}x", r >= 1.6))
    for variant in VARIANTS:
        for part, scenario, factor in (("postfix", "10 sessions", 3.5),
                                       ("postfix", "1 session", 18),
                                       ("sendmail", "1 session", 18)):
            ours = res.get(part, variant, scenario, "ours", "inet")
            py_inet = res.get(part, variant, scenario, "pymilter", "inet")
            py_unix = res.get(part, variant, scenario, "pymilter", "unix")
            where = f"{part} {scenario}, {variant}"
            r = _ratio(ours, py_inet)
            if r is not None:
                t.append((f"{where}: ours inet ≥ {factor}x pymilter inet", f"{r:.1f}x",
                          r >= factor))
            r = _ratio(ours, py_unix)
            if r is not None:
                t.append((f"{where}: ours inet ≥ pymilter unix", f"{r:.3f}x", r >= 1.0))
    for scenario in ("10 sessions", "1 session"):
        r = _ratio(res.get("policy", "policy", scenario, "bms", "inet"),
                   res.get("policy", "noop", scenario, "ours", "inet"))
        if r is not None:
            t.append((f"postfix {scenario}, typical message: bms default policy ≥ "
                      f"{POLICY_TARGET:.0%} of its no-op rate", f"{r:.0%}", r >= POLICY_TARGET))
        cost = _cost(res.get("policy", "policy", scenario, "bms", "inet"),
                     res.get("policy", "noop", scenario, "ours", "inet"))
        if cost is not None:
            t.append((f"postfix {scenario}, typical message: policy cost ≤ "
                      f"{POLICY_COST_TARGET_MS} ms/msg above the no-op", f"{cost:.2f} ms",
                      cost <= POLICY_COST_TARGET_MS))
        ours = res.get("policy", "noop", scenario, "ours", "inet")
        py = res.get("policy", "noop", scenario, "pymilter", "inet")
        if ours and py and ours.milter_cpu_ms is not None and py.milter_cpu_ms:
            t.append((f"postfix {scenario}, typical message, no-op: CPU/msg ours ≤ pymilter",
                      f"{ours.milter_cpu_ms:.2f} vs {py.milter_cpu_ms:.2f} ms",
                      ours.milter_cpu_ms <= py.milter_cpu_ms))
    return t


# --- main ------------------------------------------------------------------------------

def versions(impls: dict[str, Impl], sendmail: BenchSendmail | None,
             git: bool = True) -> dict[str, str]:
    def py(python: Path, code: str) -> str:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                             cwd="/", check=False)
        return out.stdout.strip() or out.stderr.strip()[-200:]

    def dpkg(pkg: str) -> str:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                             text=True, check=False)
        return out.stdout.strip() or "?"

    head = dirty = ""
    if git:
        head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"],
                              capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "Milter"],
                               capture_output=True, text=True, check=False).stdout.strip()
    meta = {
        "bms": ((head or "?") if git else "(not recorded: --no-git)")
        + (" (Milter/ has uncommitted changes)" if dirty else ""),
        "python": py(impls["ours"].python, "import sys; print(sys.version.split()[0])"),
        "pymilter": py(impls["pymilter"].python, "import Milter; print(Milter.__version__)")
        + f" on libmilter {dpkg('libmilter1.0.1')}",
        "postfix": dpkg("postfix"),
    }
    if sendmail is not None:
        meta["sendmail"] = sendmail.version()
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="driver,postfix,sendmail,policy",
                        help="comma-separated subset of driver,postfix,sendmail,policy")
    parser.add_argument("--variants", default="noop,eom-only",
                        help="milter code for the MTA parts: noop, eom-only or both")
    parser.add_argument("--repeats", type=int, default=3, help="runs per MTA measurement")
    parser.add_argument("--driver-repeats", type=int, default=3,
                        help="runs per driver measurement (short, and noisy on a small VM)")
    parser.add_argument("--driver-messages", type=int, default=3000)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every message count (0.1 for a smoke run)")
    parser.add_argument("--quick", action="store_true",
                        help="a developer's loop (about 3 minutes): driver and policy parts, "
                        "one run each, a tenth of the messages; not for the README table")
    parser.add_argument("--ours-python", type=Path, default=ROOT / ".venv/bin/python")
    parser.add_argument("--ours-workers", type=int, default=1,
                        help="worker processes of our milter in the 'ours' columns")
    parser.add_argument("--pymilter-python", type=Path,
                        default=ROOT / ".venv-pymilter/bin/python")
    parser.add_argument("--sendmail-root", type=Path,
                        default=Path(os.environ.get("BMS_SENDMAIL_ROOT")
                                     or ROOT / ".cache/sendmail"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.md")
    parser.add_argument("--command", default="", help="how the run was started (for the report)")
    parser.add_argument("--no-git", action="store_true",
                        help="do not ask git for the commit (the report says 'not recorded')")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="only render the markdown again from a results .json")
    args = parser.parse_args(argv)
    if args.render:
        return rerender(args.render, args.out)
    if args.quick:
        args.parts, args.variants = "driver,policy", "noop"
        args.repeats = args.driver_repeats = 1
        args.scale = min(args.scale, 0.1)
        if args.out == HERE / "results" / "latest.md":
            args.out = HERE / "results" / "quick.md"
    parts = set(args.parts.split(","))
    variants = [v for v in args.variants.split(",") if v]
    if not set(variants) <= set(VARIANTS):
        parser.error(f"--variants: choose from {', '.join(VARIANTS)}")
    if not parts <= {"driver", "postfix", "sendmail", "policy"}:
        parser.error("--parts: choose from driver, postfix, sendmail, policy")
    if parts & {"postfix", "sendmail", "policy"} and os.environ.get("BMS_NETNS") != "1":
        parser.error("the MTAs run only inside the private network namespace: use bench/run.sh")

    def n(count: int) -> int:
        return max(10, int(count * args.scale))

    impls = {
        "pymilter": Impl("pymilter", args.pymilter_python),
        "ours": Impl("ours", args.ours_python, workers=args.ours_workers),
        "ours-w2": Impl("ours-w2", args.ours_python, workers=2),
    }
    workdir = Path(tempfile.mkdtemp(prefix="bms-bench-"))
    os.chmod(workdir, 0o755)  # Postfix's smtpd (user postfix) reaches the unix socket
    specs = {"inet": INET_SPEC, "unix": f"unix:{workdir}/milter.sock"}
    res = Results()
    sendmail = (BenchSendmail(str(workdir / "sm"), root=args.sendmail_root)
                if "sendmail" in parts else None)
    started = datetime.datetime.now(datetime.timezone.utc)
    meta = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_info()}
    if args.command:
        meta["command"] = f"`{args.command}`"
        if args.ours_workers != 1:
            meta["ours"] = f"our milter with workers = {args.ours_workers}"
    meta.update(versions(impls, sendmail, git=not args.no_git))

    def stalls(impl: str, sock: str, warm_rate: float) -> bool:
        # pymilter over TCP when it pays the ~40 ms stalls (see the stall probes)
        return impl == "pymilter" and sock == "inet" and warm_rate < 150

    try:
        if "driver" in parts:
            log("part 1: direct protocol driver")
            run_driver_part(res, impls, specs, workdir, n(args.driver_messages),
                            args.driver_repeats)
        if "postfix" in parts:
            log("part 2: Postfix")
            pf = BenchPostfix(workdir / "pf", f"inet:127.0.0.1:{MILTER_PORT}", specs["unix"])
            pf.start()
            res.add_command("postfix", f"# smtpd listeners: {pf.port('none')} no milter, "
                            f"{pf.port('inet')} inet milter, {pf.port('unix')} unix milter")
            try:
                run_smtp_part(res, MtaPart(
                    "postfix", [(10, n(1000)), (1, n(500))], pf.port,
                    before=lambda _spec: None, after=lambda: None,
                    settle=lambda: pf.postfix.wait_idle(300), slow=stalls),
                    impls, specs, workdir, args.repeats, variants)
            finally:
                pf.stop()
        if sendmail is not None:
            log("part 3: sendmail")
            sm = sendmail

            def sm_after() -> None:
                sm.stop_daemon()
                sm.clear_queue()

            try:
                run_smtp_part(res, MtaPart(
                    "sendmail", [(1, n(300))], lambda _sock: sm.port,
                    before=sm.restart, after=sm_after, settle=lambda: None, slow=stalls),
                    impls, specs, workdir, args.repeats, variants)
            finally:
                sm.stop_daemon()
        if "policy" in parts:
            log("part 4: bms's default policy vs its no-op milter, through Postfix")
            run_policy_part(res, impls, workdir, [(10, n(1000)), (1, n(500))], args.repeats)
    finally:
        meta["duration"] = f"{(datetime.datetime.now(datetime.timezone.utc) - started).seconds} s"
        report = render(res, meta)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        args.out.with_suffix(".json").write_text(json.dumps(
            {"meta": meta, "measurements": [asdict(m) for m in res.measurements],
             "commands": res.commands, "problems": res.problems}, indent=1))
        print(report)
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if res.problems else 0


def rerender(source: Path, out: Path) -> int:
    data = json.loads(source.read_text())
    res = Results([Measurement(**m) for m in data["measurements"]], data["commands"],
                  data["problems"])
    report = render(res, data["meta"])
    out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
