"""Prometheus metrics (SPEC §7): what bms decided and how long it took.

Off unless :func:`start` (or :func:`enable`) ran: every recording function
is then one global lookup and a comparison, so the framework and the policy
call them unconditionally.  prometheus_client is imported only when metrics
are turned on (``[metrics] listen``).

Worker processes (``[milter] workers > 1``) each count on their own:
prometheus_client's multiprocess mode, where every process writes its values
into memory-mapped files named after its pid in one directory
(``PROMETHEUS_MULTIPROC_DIR``, which must be set before the library is
imported).  :func:`start` runs in the parent before the workers are forked;
the parent serves ``/metrics`` by merging the files of every process;
:func:`process_exited` drops a dead worker's share of the live gauge (active
connections) while its counters stay counted.  Single-process bms runs the
same way.

Metrics (label values are stable words, never addresses or names)::

    bms_messages_total{verdict,reason}    one per verdict line in milter.log
    bms_callback_duration_seconds{callback}   time in each milter callback
    bms_active_connections                MTA connections being served now
    bms_connections_total                 MTA connections served
    bms_dns_query_duration_seconds{rdtype,outcome}   DNS queries sent
    bms_cbv_duration_seconds{kind,outcome}    CBV probe / DSN SMTP sessions
    bms_config_reloads_total{result}      SIGHUP reloads, per process
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import stat
import sys
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

VERDICTS: Final = ("accept", "reject", "tempfail", "discard",
                   "dryrun_reject", "dryrun_tempfail", "dryrun_discard")
# Callbacks take microseconds to a CBV's seconds; DNS and CBV are network waits.
CALLBACK_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                           0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DNS_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                      1.0, 2.5, 5.0, 10.0)
CBV_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
                      60.0)
MAX_LABEL: Final = 64  # characters of a label value kept (a tag is a word or two)
ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


class MetricsError(Exception):
    """Metrics cannot be turned on; the message says why, in one line."""


def _label(value: str) -> str:
    """A label value: printable, bounded, never empty."""
    text = "".join(c if c.isprintable() else "?" for c in value[:MAX_LABEL]).strip()
    return text or "none"


class Recorder:
    """The bms metrics in one prometheus_client registry (``None``: in no
    registry, as multiprocess mode wants: the files are what is served)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.messages = Counter(
            "bms_messages", "Verdicts, one per ACCEPT/REJECT/TEMPFAIL/DISCARD (or DRYRUN) "
            "line in milter.log, by verdict and reason tag", ["verdict", "reason"],
            registry=registry)
        self.callbacks = Histogram(
            "bms_callback_duration_seconds", "Time spent in each milter callback",
            ["callback"], buckets=CALLBACK_BUCKETS, registry=registry)
        self.active = Gauge(
            "bms_active_connections", "MTA connections being served",
            multiprocess_mode="livesum", registry=registry)
        self.connections = Counter(
            "bms_connections", "MTA connections served", registry=registry)
        self.dns = Histogram(
            "bms_dns_query_duration_seconds", "DNS queries sent (cache misses), by record "
            "type and outcome", ["rdtype", "outcome"], buckets=DNS_BUCKETS, registry=registry)
        self.cbv = Histogram(
            "bms_cbv_duration_seconds", "SMTP sessions of call-back verification probes "
            "and DSN notices, by kind and outcome", ["kind", "outcome"], buckets=CBV_BUCKETS,
            registry=registry)
        self.reloads = Counter(
            "bms_config_reloads", "Configuration reloads (SIGHUP), per process, by result",
            ["result"], registry=registry)

    def decision(self, verdict: str, reason: str) -> None:
        self.messages.labels(_label(verdict), _label(reason)).inc()

    def callback(self, name: str, seconds: float) -> None:
        self.callbacks.labels(_label(name)).observe(seconds)

    def connection_opened(self) -> None:
        self.connections.inc()
        self.active.inc()

    def connection_closed(self) -> None:
        self.active.dec()

    def dns_query(self, seconds: float, outcome: str, rdtype: str) -> None:
        self.dns.labels(_label(rdtype), _label(outcome)).observe(seconds)

    def cbv_session(self, seconds: float, outcome: str, kind: str) -> None:
        self.cbv.labels(_label(kind), _label(outcome)).observe(seconds)

    def reload(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "error").inc()


# --- the process-wide switch: None while metrics are off ----------------------------

_recorder: Recorder | None = None
_directory: str | None = None
_registry: CollectorRegistry | None = None
_endpoint: MetricsServer | None = None
_lock = threading.Lock()


def enabled() -> bool:
    return _recorder is not None


def decision(verdict: str, reason: str) -> None:
    """A verdict the pipeline logged: ``accept``, ``reject``, ``tempfail``,
    ``discard`` or ``dryrun_<verdict>``; ``reason`` is the decision's tag."""
    r = _recorder
    if r is not None:
        r.decision(verdict, reason)


def callback(name: str, seconds: float) -> None:
    """One milter callback (``connect``, ``envfrom``, ``eom`` …) took ``seconds``."""
    r = _recorder
    if r is not None:
        r.callback(name, seconds)


def connection_opened() -> None:
    r = _recorder
    if r is not None:
        r.connection_opened()


def connection_closed() -> None:
    r = _recorder
    if r is not None:
        r.connection_closed()


def dns(seconds: float, outcome: str, rdtype: str = "") -> None:
    """One DNS query (not a cache hit): ``answer``, ``nodata``, ``nxdomain``,
    ``timeout`` or ``error``."""
    r = _recorder
    if r is not None:
        r.dns_query(seconds, outcome, rdtype)


def cbv(seconds: float, outcome: str, kind: str = "probe") -> None:
    """One SMTP session of a CBV probe (``kind`` ``probe``) or a DSN (``dsn``)."""
    r = _recorder
    if r is not None:
        r.cbv_session(seconds, outcome, kind)


def reload(ok: bool) -> None:
    r = _recorder
    if r is not None:
        r.reload(ok)


# --- turning metrics on --------------------------------------------------------------

def prepare_directory(path: str) -> None:
    """Create ``path`` (mode 0700) or check that it is a private directory of
    ours, and remove the value files an earlier run left there."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise MetricsError(f"metrics directory {path} is not a directory")
        if st.st_uid != os.geteuid():
            raise MetricsError(f"metrics directory {path} belongs to uid {st.st_uid}, "
                               f"not to us (uid {os.geteuid()})")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(path, 0o700)
        for entry in os.scandir(path):
            if entry.name.endswith(".db") and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
    except OSError as exc:
        raise MetricsError(f"metrics directory {path}: {exc.strerror or exc}") from None


def enable(directory: str) -> None:
    """Turn recording on, in multiprocess mode with files in ``directory``
    (emptied first).  Call before forking the workers."""
    global _recorder, _directory, _registry
    with _lock:
        if _recorder is not None:
            return
        prepare_directory(directory)
        previous = os.environ.get(ENV)
        os.environ[ENV] = directory
        try:
            _check_library()
            from prometheus_client import CollectorRegistry
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
            recorder = Recorder(None)
        except BaseException:
            if previous is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = previous
            raise
        _directory, _registry, _recorder = directory, registry, recorder


def _check_library() -> None:
    """prometheus_client picks single- or multi-process values once, when it
    is first imported: that must be now, with the directory in the environment."""
    already = "prometheus_client" in sys.modules
    try:
        from prometheus_client import values
    except ImportError:
        raise MetricsError("metrics need the prometheus-client package "
                           "(pip install prometheus-client)") from None
    if already and not getattr(values.ValueClass, "_multiprocess", False):
        raise MetricsError("prometheus_client was imported before metrics were "
                           "turned on; it cannot count for several processes")


def process_exited(pid: int) -> None:
    """A worker is gone: its live gauge no longer counts (its counters do)."""
    directory = _directory
    if directory is None:
        return
    from prometheus_client.multiprocess import mark_process_dead

    try:
        mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    except OSError as exc:
        log.warning("metrics: cannot drop the files of process %d: %s", pid, exc)


class FrameworkObserver:
    """The framework's observer (:class:`Milter.observer.Observer`): connections
    and callback times go into these metrics (nothing while they are off)."""

    def connection_opened(self) -> None:
        connection_opened()

    def connection_closed(self) -> None:
        connection_closed()

    def callback(self, name: str, seconds: float) -> None:
        callback(name, seconds)

    def process_exited(self, pid: int) -> None:
        process_exited(pid)


OBSERVER = FrameworkObserver()


def render() -> bytes:
    """The exposition text of every process's values (what /metrics serves)."""
    registry = _registry
    if registry is None:
        return b""
    from prometheus_client import generate_latest

    return generate_latest(registry)


# --- the HTTP endpoint ---------------------------------------------------------------

def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (every IPv4 address)."""
    t = text.strip()
    if t.startswith("["):
        host, sep, rest = t[1:].partition("]")
        port = rest[1:] if sep and rest.startswith(":") else ""
        ok = bool(host)
    else:
        host, sep, port = t.rpartition(":")
        ok = bool(sep) and ":" not in host
    if not (ok and port.isdigit() and 0 <= int(port) < 65536):
        raise MetricsError(f"metrics listen address {text!r}: expected HOST:PORT, "
                           "[IPv6]:PORT or :PORT")
    return host or "0.0.0.0", int(port)


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = 10  # a client that stalls loses its thread after this many seconds
    server_version = "bms"

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self._reply(404, b"Not found: the metrics are at /metrics\n", "text/plain")
            return
        try:
            body = self.server.render()
        except Exception:  # a broken value file: say so, keep serving
            log.exception("metrics: cannot collect the values")
            self._reply(500, b"cannot collect the metrics; see milter.log\n", "text/plain")
            return
        from prometheus_client import CONTENT_TYPE_LATEST

        self._reply(200, body, CONTENT_TYPE_LATEST)

    def _reply(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log: scrapes come every few seconds


class MetricsServer(ThreadingHTTPServer):
    """Serves ``GET /metrics`` on its own thread."""

    daemon_threads = True

    def __init__(self, host: str, port: int) -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
            family, _, _, _, address = infos[0]
            self.address_family = family
            super().__init__((str(address[0]), int(address[1])), _Handler)
        except OSError as exc:
            raise MetricsError(f"cannot listen on {_show(host, port)} for metrics: "
                               f"{exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self.serve_forever, name="metrics",
                                        kwargs={"poll_interval": 0.5}, daemon=True)

    def server_bind(self) -> None:
        # Not HTTPServer.server_bind: it looks our own name up in the DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{_show(self.server_name, self.server_port)}/metrics"

    def render(self) -> bytes:
        return render()

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.shutdown()
        self.server_close()


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _close_in_child() -> None:
    """After fork: a worker has no serving thread, and must not keep the
    metrics port open should it outlive the parent."""
    endpoint = _endpoint
    if endpoint is not None:
        endpoint.socket.close()


_fork_hook_installed = False


def start(listen: str, directory: str) -> MetricsServer:
    """Turn metrics on (:func:`enable`) and serve them at ``listen``; raises
    :class:`MetricsError` (one line) when either is impossible."""
    global _endpoint, _fork_hook_installed
    host, port = parse_listen(listen)
    enable(directory)
    endpoint = MetricsServer(host, port).start()
    _endpoint = endpoint
    if not _fork_hook_installed:
        os.register_at_fork(after_in_child=_close_in_child)
        _fork_hook_installed = True
    return endpoint


def stop(remove_files: bool = True) -> None:
    """Stop serving and recording (at exit); the value files go too."""
    global _endpoint, _recorder, _registry, _directory
    endpoint, _endpoint = _endpoint, None
    if endpoint is not None:
        endpoint.stop()
    directory = _directory
    _recorder = _registry = _directory = None
    if directory is not None and remove_files:
        _remove_files(directory, os.listdir(directory) if os.path.isdir(directory) else ())


def _remove_files(directory: str, names: Iterable[str]) -> None:
    for name in names:
        if name.endswith(".db"):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass
