#!/usr/bin/env bash
# The main job: set up, build, and run ringattn-bench on its embedded
# default (CPU ranks in one process). Extra arguments go to ringattn-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "ringattn: installing dependencies and building (log: setup.log) ..."
if ! bash tools/setup.sh >setup.log 2>&1; then
  tail -n 40 setup.log
  echo "ringattn: setup failed; full log in setup.log" >&2
  exit 1
fi
exec build/tools/ringattn-bench "$@"
