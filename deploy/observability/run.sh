#!/usr/bin/env bash
# Proves the services' metrics, traces and logs with real tools: builds both binaries, starts
# them on loopback against fresh databases on a PostgreSQL server (OBS_PG_URL, default
# postgres://postgres@127.0.0.1:5432), drives the API, lints each /metrics with promtool, has a
# real Prometheus scrape them (and runs every Grafana panel query against it), checks and
# unit-tests the alert rules with promtool, runs the chart's rendered migrate commands, receives
# their spans with an OTLP receiver (gRPC and HTTP/protobuf), and checks the JSON log lines.
# Needs python3 (3.10+), psql, cargo, and PyPI (and apt, if prometheus/promtool are missing) on
# the first run.
#   bash deploy/observability/run.sh              # all tests
#   bash deploy/observability/run.sh -k traces    # pytest arguments pass through
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$here/.venv"   # ignored by deploy/observability/.gitignore
stamp="$venv/.requirements.txt"

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
# Reinstall only when the pins change.
if ! cmp -s "$here/requirements.txt" "$stamp"; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi

(cd "$repo" && cargo build --locked -p auth-service -p task-service)
target_dir="$(cd "$repo" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
export OBS_BIN_DIR="${OBS_BIN_DIR:-$target_dir/debug}"

cd "$here"
exec "$venv/bin/python" -m pytest "$@"
