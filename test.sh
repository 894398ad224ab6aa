#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine (Debian
# packages, an unpacked sendmail, a virtualenv in .venv) and runs the whole
# suite: unit tests, socket tests and end-to-end tests through real Postfix and
# sendmail, inside a private loopback-only network namespace.
# Extra arguments go to pytest, e.g. ./test.sh -k postfix -x
set -euo pipefail
ROOT=$(cd "$(dirname "$0")" && pwd)
cd "$ROOT"
. scripts/lib.sh

apt_install postfix miltertest nsd iproute2 procps redis-server openssl logrotate man-db
# Debian 12's own Python with the dependencies from Debian packages: tests/ops
# runs the daemon on it (as user mail, and on these older library versions).
apt_install python3-spf python3-dkim python3-authres python3-srs python3-dnspython \
    python3-redis python3-prometheus-client python3-pip python3-setuptools python3-wheel
ensure_sendmail
ensure_venv "$ROOT/.venv" ".[test]"
ensure_pymilter
ensure_original_bms
ensure_conformance

.venv/bin/ruff check Milter bmslib bms.py milter.py tests bench
.venv/bin/mypy
export BMS_SENDMAIL_ROOT=$SENDMAIL_ROOT BMS_PYMILTER_PYTHON=$PYMILTER_VENV/bin/python
export BMS_ORIGINAL_CFG=$ORIGINAL_BMS_CFG
export BMS_CONFORMANCE=$CONFORMANCE
run_in_netns "$ROOT/.venv/bin/python" -m pytest "$@"
