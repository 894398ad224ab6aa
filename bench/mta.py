"""The MTAs of the benchmark: thin wrappers over the test bed (``tests/testbed``).

* Postfix: ``testbed.Postfix`` with ``transport="discard"`` and one smtpd
  listener per milter configuration (none / inet / unix, each with its own
  ``-o smtpd_milters=``), so one instance serves every configuration without
  a reload.
* sendmail: ``testbed.Sendmail`` as a ``-bD`` daemon, restarted with a new
  ``sendmail.cf`` per configuration, but without the ``-X`` traffic log the
  test bed always turns on (it writes every SMTP line to a file: MTA overhead
  that is not what we measure).

Both run only inside the network namespace of ``bench/run.sh``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import testbed  # noqa: E402


class BenchPostfix:
    """A private Postfix that discards what it accepts; ``port(kind)`` for
    kind ``none``, ``inet`` or ``unix``."""

    def __init__(self, directory: Path, milter_inet: str, milter_unix: str) -> None:
        """``milter_*``: Postfix milter specs (``inet:HOST:PORT``, ``unix:/path``)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.postfix = testbed.Postfix(str(directory), transport="discard")
        self.ports = {"none": self.postfix.port}
        for kind, spec in (("inet", milter_inet), ("unix", milter_unix)):
            self.ports[kind] = self.postfix.add_listener(smtpd_milters=spec).port

    def port(self, kind: str) -> int:
        return self.ports[kind]

    def start(self) -> None:
        self.postfix.start()

    def stop(self) -> None:
        self.postfix.stop()


class BenchSendmail(testbed.Sendmail):
    """``testbed.Sendmail`` whose daemon runs without the ``-X`` traffic log."""

    def _command(self, *args: str) -> list[str]:
        if "-X" in args:
            i = args.index("-X")
            args = args[:i] + args[i + 2 :]
        return super()._command(*args)

    def restart(self, milter: str | None) -> None:
        """(Re)start ``-bD`` with ``milter`` (a sendmail socket spec) or none."""
        self.stop_daemon()
        self.milter = milter or ""
        self.write_config()
        self.start_daemon()

    def version(self) -> str:
        out = subprocess.run(self._command("-d0.1", "-bt"), capture_output=True, text=True,
                             input="", check=False, timeout=120)
        for line in out.stdout.splitlines():
            if line.startswith("Version "):
                return line.split()[1]
        return "?"
