"""bms on Debian 12's own Python and Debian's packages of its dependencies
(python3-redis 4.3.4, python3-prometheus-client 0.16.0, python3-dnspython
2.3.0, ...; ./test.sh's setup installs them): installed with pip --no-deps
into a venv with the system site-packages (the README's Debian recipe), it
starts as root, switches to mail, serves a session, keeps its state in Redis
and answers on the metrics endpoint."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from mtaclient import MtaClient
from testbed.redisd import RedisServer, free_port
from testbed.redisd import redis_server as redis_server  # the session fixture

from bmslib.state.redis import RedisStore
from Milter.protocol import commands as cmd
from Milter.protocol import replies as R

from .helpers import Daemon, Installed, write_config

VERSIONS = ("import json, redis, prometheus_client, dns.version, dkim; "
            "print(json.dumps([redis.__version__, dns.version.version, redis.__file__, "
            "prometheus_client.__file__]))")


def debian_python(installed: Installed) -> list[str]:
    out = subprocess.run([str(installed.python), "-c", VERSIONS], capture_output=True,
                         text=True, cwd="/", check=False)
    found = json.loads(out.stdout) if out.returncode == 0 else []
    on_debian = bool(found) and found[2].startswith("/usr/lib/python3/dist-packages/")
    if not on_debian:
        if os.environ.get("BMS_SENDMAIL_ROOT"):  # under ./test.sh: its setup provides them
            raise AssertionError(f"the ops venv is not on Debian's packages: {out}")
        pytest.skip("Debian's python3-redis etc. are not installed (./test.sh installs them)")
    return found


@contextlib.contextmanager
def envelope(directory: Path, ip: str) -> Iterator[MtaClient]:
    """A session up to an accepted RCPT TO from ``ip``."""
    with MtaClient(str(directory / "run" / "bms.sock"), family=socket.AF_UNIX) as mta:
        mta.negotiate()
        assert mta.connect(ip=ip) == R.CONTINUE
        assert mta.command(cmd.Helo(b"pc.example.net")) == R.CONTINUE
        assert mta.command(cmd.Mail((b"<alice@example.net>",))) == R.CONTINUE
        assert mta.command(cmd.Rcpt((b"<bob@example.org>",))) == R.CONTINUE
        yield mta


@pytest.mark.skipif(os.geteuid() != 0, reason="starts as root and switches to mail")
def test_daemon_runs_on_debian_12_packages(installed: Installed, open_tmp: Path,
                                           redis_server: RedisServer) -> None:
    versions = debian_python(installed)
    assert versions[:2] == ["4.3.4", "2.3.0"]
    assert installed.drop_user is not None
    metrics_port = free_port()
    cfg = write_config(open_tmp, {
        "milter": {"user": installed.drop_user, "internal_connect": "192.0.2.0/24"},
        "state": {"backend": f"redis://127.0.0.1:{redis_server.port}/5"},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"}})
    for sub in ("run", "log", "lib", "save"):
        (open_tmp / sub).mkdir()
        shutil.chown(open_tmp / sub, installed.drop_user)
    d = Daemon(open_tmp, cfg, python=str(installed.python), cwd=Path("/"))
    redis.Redis(host="127.0.0.1", port=redis_server.port, db=5).flushdb()
    try:
        d.wait_ready()
        with envelope(open_tmp, "192.0.2.10") as mta:
            assert mta.command(cmd.Data()) == R.CONTINUE
            mta.send(cmd.Header(b"Subject", b"hello"))  # no reply: bms asks for NR_HDR
            assert mta.command(cmd.EndOfHeaders()) == R.CONTINUE
            mta.send(cmd.Body(b"Hi Bob.\r\n"), cmd.EndOfMessage())
            assert mta.final()[1] == R.CONTINUE
        # A ban written into Redis by another host is read by this one.
        RedisStore(f"redis://127.0.0.1:{redis_server.port}/5").ban_ip(
            "192.0.2.66", time.time() + 3600, "test")
        with envelope(open_tmp, "192.0.2.66") as mta:
            reply = mta.command(cmd.Data())
            assert isinstance(reply, R.ReplyCode) and reply.text.startswith(b"550"), reply
        d.wait_log("connect from")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=10) as page:
            text = page.read().decode()
        assert "bms_connections_total 2.0" in text, text
        assert any("BANNED IP" in m for m in d.messages())
        assert "running as user mail" in " ".join(d.messages())
    finally:
        assert d.stop() == 0
