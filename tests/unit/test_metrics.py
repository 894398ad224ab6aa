"""bmslib.metrics: the no-op API while metrics are off, the recorder's
labels, multiprocess counting across forked workers, the value directory,
the listen address and the HTTP endpoint.

prometheus_client picks single- or multi-process values once per
interpreter, when it is first imported; so everything that turns metrics on
for real runs in a fresh interpreter (:func:`run`), and this process only
uses :class:`bmslib.metrics.Recorder` with an ordinary registry.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bmslib import metrics
from bmslib.metrics import MetricsError, MetricsServer, Recorder, parse_listen

REPO = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition text, keyed by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def run(code: str, tmp_path: Path) -> str:
    """Run ``code`` in a fresh interpreter (cwd ``tmp_path``); its stdout."""
    env = {k: v for k, v in os.environ.items() if k != metrics.ENV}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# --- off -------------------------------------------------------------------------------

def test_off_every_call_is_a_noop_and_prometheus_is_never_imported(tmp_path: Path) -> None:
    out = run("""
        import sys
        from bmslib import metrics
        metrics.decision("reject", "zombie PC")
        metrics.callback("eom", 0.01)
        metrics.connection_opened()
        metrics.connection_closed()
        metrics.dns(0.001, "answer", "TXT")
        metrics.cbv(0.2, "accepted", "probe")
        metrics.reload(True)
        metrics.process_exited(12345)
        metrics.stop()
        print(metrics.enabled(), metrics.render(), "prometheus_client" in sys.modules)
    """, tmp_path)
    assert out.split() == ["False", "b''", "False"]


# --- the recorder ------------------------------------------------------------------------

@pytest.fixture
def recorded() -> tuple[Recorder, CollectorRegistry]:
    registry = CollectorRegistry()
    return Recorder(registry), registry


def get(registry: CollectorRegistry, name: str, labels: Mapping[str, str] | None = None
        ) -> float | None:
    return registry.get_sample_value(name, dict(labels or {}))


def test_verdicts_are_counted_by_verdict_and_reason(
        recorded: tuple[Recorder, CollectorRegistry]) -> None:
    rec, reg = recorded
    for _ in range(2):
        rec.decision("reject", "zombie PC")
    rec.decision("dryrun_reject", "SPF fail")
    rec.decision("accept", "ok")
    assert get(reg, "bms_messages_total", {"verdict": "reject", "reason": "zombie PC"}) == 2
    assert get(reg, "bms_messages_total", {"verdict": "dryrun_reject",
                                           "reason": "SPF fail"}) == 1
    assert get(reg, "bms_messages_total", {"verdict": "accept", "reason": "ok"}) == 1
    assert get(reg, "bms_messages_total", {"verdict": "reject", "reason": "SPF fail"}) is None


@pytest.mark.parametrize(("reason", "label"), [
    ("", "none"),
    ("  ", "none"),
    ("bad\nline\x1b[31m", "bad?line?[31m"),
    ("x" * 200, "x" * metrics.MAX_LABEL),
])
def test_label_values_are_printable_bounded_and_never_empty(
        recorded: tuple[Recorder, CollectorRegistry], reason: str, label: str) -> None:
    rec, reg = recorded
    rec.decision("tempfail", reason)
    assert get(reg, "bms_messages_total", {"verdict": "tempfail", "reason": label}) == 1


def test_callbacks_connections_dns_cbv_and_reloads(
        recorded: tuple[Recorder, CollectorRegistry]) -> None:
    rec, reg = recorded
    rec.callback("envfrom", 0.0002)
    rec.callback("envfrom", 3.0)
    rec.callback("eom", 0.02)
    assert get(reg, "bms_callback_duration_seconds_count", {"callback": "envfrom"}) == 2
    assert get(reg, "bms_callback_duration_seconds_bucket",
               {"callback": "envfrom", "le": "0.00025"}) == 1
    assert get(reg, "bms_callback_duration_seconds_sum", {"callback": "envfrom"}) \
        == pytest.approx(3.0002)
    rec.connection_opened()
    rec.connection_opened()
    rec.connection_closed()
    assert get(reg, "bms_active_connections") == 1
    assert get(reg, "bms_connections_total") == 2
    rec.dns_query(0.003, "nxdomain", "TXT")
    assert get(reg, "bms_dns_query_duration_seconds_count",
               {"rdtype": "TXT", "outcome": "nxdomain"}) == 1
    rec.cbv_session(0.4, "refused", "dsn")
    assert get(reg, "bms_cbv_duration_seconds_count", {"kind": "dsn", "outcome": "refused"}) == 1
    rec.reload(True)
    rec.reload(False)
    rec.reload(False)
    assert get(reg, "bms_config_reloads_total", {"result": "ok"}) == 1
    assert get(reg, "bms_config_reloads_total", {"result": "error"}) == 2


def test_turning_on_after_a_plain_import_is_refused(tmp_path: Path) -> None:
    """In this process prometheus_client is already imported in single-process
    mode: counting for forked workers would silently be wrong."""
    assert metrics.ENV not in os.environ
    with pytest.raises(MetricsError, match="imported before"):
        metrics.enable(str(tmp_path / "m"))
    assert not metrics.enabled()
    assert metrics.ENV not in os.environ  # put back as it was


# --- several processes -----------------------------------------------------------------

def test_forked_workers_are_summed_and_a_dead_workers_gauge_goes(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "counter_4242.db").write_bytes(b"stale values of an earlier run")
    (directory / "keep.txt").write_text("not ours to delete")
    out = run(f"""
        import os
        from bmslib import metrics
        metrics.enable({str(directory)!r})
        print(sorted(os.listdir({str(directory)!r})))
        pids = []
        for n in (1, 2):
            pid = os.fork()
            if pid == 0:
                for _ in range(n):
                    metrics.decision("accept", "ok")
                metrics.decision("reject", "zombie PC")
                metrics.callback("eom", 0.001 * n)
                metrics.connection_opened()  # still open when the worker dies
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        print("=== before")
        print(metrics.render().decode())
        metrics.process_exited(pids[0])
        print("=== after")
        print(metrics.render().decode())
    """, tmp_path)
    listing, rest = out.split("=== before")
    assert "counter_4242.db" not in listing  # the stale value file is gone
    assert "keep.txt" in listing
    before_text, after_text = rest.split("=== after")
    before, after = samples(before_text), samples(after_text)
    assert value(before, "bms_active_connections") == 2
    assert value(after, "bms_active_connections") == 1  # only the live worker's share
    for found in (before, after):  # counters of a dead worker still count
        assert value(found, "bms_messages_total", verdict="accept", reason="ok") == 3
        assert value(found, "bms_messages_total", verdict="reject", reason="zombie PC") == 2
        assert value(found, "bms_callback_duration_seconds_count", callback="eom") == 2
        assert value(found, "bms_connections_total") == 2


def test_endpoint_serves_metrics_and_only_metrics(tmp_path: Path) -> None:
    out = run(f"""
        import urllib.error, urllib.request
        from bmslib import metrics
        server = metrics.start("127.0.0.1:0", {str(tmp_path / "m")!r})
        metrics.decision("tempfail", "greylist")
        base = "http://127.0.0.1:%d" % server.server_port
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
            print(r.status, r.headers["Content-Type"])
            print(r.read().decode())
        try:
            urllib.request.urlopen(base + "/other", timeout=10)
        except urllib.error.HTTPError as exc:
            print("=== other", exc.code)
        print(server.url == base + "/metrics")
        metrics.stop()
        import os
        print(os.listdir({str(tmp_path / "m")!r}))
    """, tmp_path)
    head, _, rest = out.partition("\n")
    assert head.startswith("200 text/plain")
    text, _, tail = rest.partition("=== other")
    assert value(samples(text), "bms_messages_total", verdict="tempfail",
                 reason="greylist") == 1
    assert tail.split() == ["404", "True", "[]"]  # stop() removes the value files


# --- the directory and the address ----------------------------------------------------

def test_directory_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "a" / "metrics"
    metrics.prepare_directory(str(path))
    assert path.is_dir() and (path.stat().st_mode & 0o777) == 0o700


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_directory_that_is_not_one_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "metrics"
    if kind == "file":
        path.write_text("x")
    else:
        (tmp_path / "elsewhere").mkdir()
        path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(MetricsError, match="metrics directory"):
        metrics.prepare_directory(str(path))


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9894", ("127.0.0.1", 9894)),
    (":9894", ("0.0.0.0", 9894)),
    ("[::1]:9894", ("::1", 9894)),
    ("localhost:80", ("localhost", 80)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9894", "127.0.0.1", "::1:9894", "[::1]", "[]:1",
                                  "host:port", "host:70000"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(MetricsError, match="expected HOST:PORT"):
        parse_listen(text)


def test_a_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(MetricsError) as info:
            MetricsServer("127.0.0.1", port)
    message = str(info.value)
    assert message == f"cannot listen on 127.0.0.1:{port} for metrics: Address already in use"
