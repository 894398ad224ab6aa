#!/usr/bin/env bash
# Sets up a virtualenv in .venv-run and runs the bms daemon in the foreground on
# the embedded default: the shipped pymilter.cfg (milter socket
# inet:8894@127.0.0.1, the sample access file, SQLite state in ./local/lib,
# logs in ./local/log/milter.log).  Point an MTA at it with the lines it logs
# at startup; stop it with Ctrl-C, reload it with kill -HUP.
# Extra arguments go to bms, e.g. ./run.sh -c my-overrides.cfg
set -euo pipefail
ROOT=$(cd "$(dirname "$0")" && pwd)
cd "$ROOT"
. scripts/lib.sh
# The daemon's own venv: the runtime dependencies only (./test.sh's .venv adds
# the test tools).
ensure_venv "$ROOT/.venv-run" "."
echo "bms: logging to $ROOT/local/log/milter.log" >&2
exec .venv-run/bin/bms --foreground -c pymilter.cfg "$@"
