#!/usr/bin/env bash
# Benchmark: no milter / pymilter (libmilter) / our Milter, the same no-op milter
# (bench/noop_milter.py), over inet and unix sockets, in one run:
#   1. bench/driver.py, a direct protocol driver, 1/2/4 concurrent connections;
#   2. Postfix + smtp-source, 10 sessions and 1 session;
#   3. sendmail -bD + smtp-source, 1 session;
#   4. (policy) the bms daemon with its full default policy (SPF against NSD on
#      loopback, defang of a typical message) vs the no-op milter, through Postfix.
# Installs what it needs (Debian packages, .venv, .venv-pymilter with pymilter
# built against libmilter, an unpacked sendmail), then runs bench/runner.py
# inside a private loopback-only network namespace (TESTBED.md rule one).
# Results: bench/results/latest.md (printed) and latest.json.
# Extra arguments go to the runner, e.g.
#   bench/run.sh --parts driver --repeats 1
#   bench/run.sh --scale 0.1          # a quick smoke run
#   bench/run.sh --parts policy --out bench/results/policy.md
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib.sh

apt_install postfix iproute2 procps tcpdump nsd
ensure_sendmail
ensure_venv "$ROOT/.venv" ".[test]"
ensure_pymilter

export BMS_SENDMAIL_ROOT=$SENDMAIL_ROOT
mkdir -p "$ROOT/bench/results"
run_in_netns "$ROOT/.venv/bin/python" "$ROOT/bench/runner.py" \
    --command "bench/run.sh${*:+ $*}" "$@"
