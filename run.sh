#!/usr/bin/env bash
# Sets up a virtualenv in .venv and runs the bms daemon in the foreground on
# the embedded default: milter socket inet:8894@127.0.0.1, logs in ./local/log.
# Point an MTA at it with the lines it prints at startup; stop it with Ctrl-C.
# Extra arguments go to bms, e.g. ./run.sh --socket unix:/tmp/bms.sock
set -euo pipefail
ROOT=$(cd "$(dirname "$0")" && pwd)
cd "$ROOT"
. scripts/lib.sh
ensure_venv "$ROOT/.venv" ".[test]"
mkdir -p local/log
echo "bms: logging to $ROOT/local/log/milter.log" >&2
exec .venv/bin/bms --foreground --logdir local/log "$@"
