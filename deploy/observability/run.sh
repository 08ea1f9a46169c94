#!/usr/bin/env bash
# Proves the services' metrics, traces and logs with real tools: builds both binaries, starts
# them on loopback against fresh databases on a PostgreSQL server (OBS_PG_URL, default
# postgres://postgres@127.0.0.1:5432), drives the API, lints each /metrics with promtool, has a
# real Prometheus scrape them (and runs every Grafana panel query against it), checks and
# unit-tests the alert rules with promtool, runs the chart's rendered migrate commands, receives
# their spans with an OTLP receiver (gRPC and HTTP/protobuf), and checks the JSON log lines
# (and the text ones of `LOG_FORMAT=text`).
# Needs python3 (3.10+), psql, cargo, and PyPI (and apt, if prometheus/promtool are missing) on
# the first run.
#   bash deploy/observability/run.sh              # all tests
#   bash deploy/observability/run.sh -k traces    # pytest arguments pass through
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$here/.venv"   # ignored by deploy/observability/.gitignore
# shellcheck source=deploy/suite-lib.sh
source "$repo/deploy/suite-lib.sh"

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

pinned_venv "$venv" "$here/requirements.txt"

(cd "$repo" && cargo build --locked -p auth-service -p task-service)
target_dir="$(cargo_target_dir "$repo")"
export OBS_BIN_DIR="${OBS_BIN_DIR:-$target_dir/debug}"

cd "$here"
exec "$venv/bin/python" -m pytest "$@"
