#!/usr/bin/env bash
# Benchmark: no milter / pymilter (libmilter) / our Milter, the same no-op milter
# (bench/noop_milter.py), over inet and unix sockets, in one run:
#   1. bench/driver.py, a direct protocol driver, 1/2/4 concurrent connections;
#   2. Postfix + smtp-source, 10 sessions and 1 session;
#   3. sendmail -bD + smtp-source, 1 session.
# Installs what it needs (Debian packages, .venv, .venv-pymilter with pymilter
# built against libmilter, an unpacked sendmail), then runs bench/runner.py
# inside a private loopback-only network namespace (TESTBED.md rule one).
# Results: bench/results/latest.md (printed) and latest.json.
# Extra arguments go to the runner, e.g.
#   bench/run.sh --parts driver --repeats 1
#   bench/run.sh --scale 0.1          # a quick smoke run
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib.sh

apt_install postfix libmilter-dev gcc libc6-dev iproute2 procps tcpdump
ensure_sendmail
ensure_venv "$ROOT/.venv" ".[test]"

# pymilter, compiled against the real libmilter, in its own virtualenv: there
# `import Milter` is pymilter.
PYM=$ROOT/.venv-pymilter
if ! (cd / && "$PYM/bin/python" -c 'import milter, Milter' 2>/dev/null); then
    ensure_python
    # pymilter is a C extension: it needs Python.h (and gcc, libmilter-dev above).
    python3 -c 'import os, sysconfig; os.stat(sysconfig.get_paths()["include"] + "/Python.h")' \
        2>/dev/null || apt_install python3-dev
    log "creating virtualenv $PYM (pymilter)"
    python3 -m venv "$PYM"
    "$PYM/bin/pip" install -q --upgrade pip
    "$PYM/bin/pip" install -q pymilter
fi

export BMS_SENDMAIL_ROOT=$SENDMAIL_ROOT
mkdir -p "$ROOT/bench/results"
run_in_netns "$ROOT/.venv/bin/python" "$ROOT/bench/runner.py" \
    --command "bench/run.sh${*:+ $*}" "$@"
