#!/usr/bin/env bash
# The benchmark, one command: deploy/bench/run.sh
#
# Builds the release binaries, gets a load generator (oha, installed with
# `cargo install --locked oha` into ~/.cargo/bin if missing; wrk from the distribution drives the
# refresh rows), creates a fresh database on the PostgreSQL server of DATABASE_URL (default
# 127.0.0.1:5432, user postgres), starts both services, seeds, drives load and prints one table.
# Everything listens on loopback; the database and every process are removed at exit.
#
# Settings (environment):
#   BENCH_SECONDS=10        length of each run
#   BENCH_ROUNDS=3          alternating rounds; the table shows the median
#   BENCH_CONCURRENCY="32 256"
#   BENCH_PIN=1             services on BENCH_SERVICE_CPU (0), load generators on BENCH_LOAD_CPU (1);
#                           0 = nothing pinned (as the issue's targets are stated)
#   BCRYPT_COST=12          the services' cost, and the cost the bcrypt bound is timed at
#   BENCH_PGBENCH_SCALE=10  pgbench -i scale
#   BENCH_TASK_VARIANTS="DATABASE_MAX_CONNECTIONS=20 DATABASE_MAX_CONNECTIONS=8 DATABASE_MAX_CONNECTIONS=4 RUST_LOG=warn TOKIO_WORKER_THREADS=1"
#                           task-service settings the single read is measured under, side by side
#                           (task-service restarted for each; the first is the baseline)
#   BENCH_CREATE_VARIANTS="CREATE_COALESCING_IN_FLIGHT=2 CREATE_COALESCING_IN_FLIGHT=4 CREATE_COALESCING_IN_FLIGHT=8 CREATE_COALESCING_IN_FLIGHT=0"
#                           the same for the create (BENCH_ONLY="create settings" runs only these)
#   BENCH_LIST_VARIANTS="LIST_CACHE_MAX_BYTES=16777216 LIST_CACHE_MAX_BYTES=0"
#                           the same for the list (100 tasks): pages kept, and none kept
#                           (BENCH_ONLY="list settings" runs only these)
#   BENCH_EQUAL_RATE_FRACTION=0.7   each endpoint and its pgbench floor are run again, one after
#                           the other, at this fraction of the endpoint's full-speed rate (oha -q,
#                           pgbench -R), for PostgreSQL's CPU per request against per statement
#   BENCH_AUTH_CPU_LIMIT=1  the login storm is measured again with auth-service in a cgroup with
#                           this CPU quota (the chart's limit); needs root; empty skips it
#   BENCH_SESSIONS=own      each service in a session (scheduling group) of its own, as in containers;
#                           shared = all in the harness's session (see sched_groups.sh)
#   BENCH_ONLY=<regex>      only the rows whose name matches (e.g. "login"; "storm" for the storm probe;
#                           "settings" for the task-service settings side by side, reads and creates)
#   BENCH_RUST_LOG=info     the services' RUST_LOG (LOG_FORMAT: BENCH_LOG_FORMAT=json)
#   BENCH_TASK_ENV=""       task-service settings for the whole run, storm included (KEY=VALUE ...;
#                           e.g. TOKIO_WORKER_THREADS=1, the runtime a 500m CPU limit gives it)
#   BENCH_OUT=deploy/bench/out/<timestamp>   raw results and report.md
#   BENCH_BIN_DIR=target/release   the auth-service and task-service binaries to measure (another
#                           build's, for a before/after run: deploy/bench/compare.sh)
#   DATABASE_URL            a server to create the bench database on (its database part is ignored)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

export BENCH_SECONDS="${BENCH_SECONDS:-10}"
export BENCH_ROUNDS="${BENCH_ROUNDS:-3}"
export BENCH_CONCURRENCY="${BENCH_CONCURRENCY:-32 256}"
export BENCH_PIN="${BENCH_PIN:-1}"
export BENCH_SERVICE_CPU="${BENCH_SERVICE_CPU:-0}"
export BENCH_LOAD_CPU="${BENCH_LOAD_CPU:-1}"
export BCRYPT_COST="${BCRYPT_COST:-12}"
export BENCH_ROOT="$ROOT"
export BENCH_OUT="${BENCH_OUT:-$ROOT/deploy/bench/out/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$BENCH_OUT"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- tools
pg_tool() {
  if command -v "$1" >/dev/null 2>&1; then command -v "$1"; return; fi
  local found
  found="$(ls -1 /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1 || true)"
  [[ -n "$found" ]] || { echo "$1 not found (install the PostgreSQL client tools)" >&2; exit 1; }
  echo "$found"
}
export PSQL; PSQL="$(pg_tool psql)"
export PGBENCH; PGBENCH="$(pg_tool pgbench)"
command -v taskset >/dev/null || { echo "taskset not found (util-linux)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 1; }

export OHA; OHA="$(command -v oha || true)"
if [[ -z "$OHA" && -x "$HOME/.cargo/bin/oha" ]]; then OHA="$HOME/.cargo/bin/oha"; fi
if [[ -z "$OHA" ]]; then
  log "installing oha (cargo install --locked oha, a few minutes, once)"
  cargo install --locked oha >&2
  OHA="$HOME/.cargo/bin/oha"
fi
export WRK; WRK="$(command -v wrk || true)"
if [[ -z "$WRK" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  log "installing wrk (apt-get) for the refresh rows"
  apt-get install -y --no-install-recommends wrk >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends wrk >/dev/null 2>&1; } \
    || true
  WRK="$(command -v wrk || true)"
fi
[[ -n "$WRK" ]] || log "wrk not found: refresh falls back to oha with random token lines (some repeats, 401)"

# ---- build
log "building release binaries"
cargo build --release -p auth-service -p task-service >&2
export BCRYPT_BENCH_BIN
BCRYPT_BENCH_BIN="$(cargo bench -p common --bench bcrypt_cost --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "bcrypt_cost":
        print(m["executable"])')"
[[ -x "$BCRYPT_BENCH_BIN" ]] || { echo "could not build the bcrypt_cost bench" >&2; exit 1; }

# ---- the bench database, dropped at exit
SERVER_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export BENCH_DB="todo_bench_$$_$(date +%s)"
BASE="${SERVER_URL%%\?*}"
QUERY=""; [[ "$SERVER_URL" == *\?* ]] && QUERY="?${SERVER_URL#*\?}"
ADMIN_URL="${BASE%/*}/postgres$QUERY"
export BENCH_DATABASE_URL="${BASE%/*}/$BENCH_DB$QUERY"

PY_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$PY_PID" ]] && kill -0 "$PY_PID" 2>/dev/null; then
    kill -TERM "$PY_PID" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$PY_PID" 2>/dev/null || break; sleep 0.5; done
  fi
  "$PSQL" "$ADMIN_URL" -qAt -c "DROP DATABASE IF EXISTS \"$BENCH_DB\" WITH (FORCE)" >/dev/null 2>&1 \
    || log "could not drop database $BENCH_DB"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "creating database $BENCH_DB"
"$PSQL" "$ADMIN_URL" -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$BENCH_DB\"" >/dev/null

# ---- the run
log "results in $BENCH_OUT"
python3 "$ROOT/deploy/bench/bench.py" &
PY_PID=$!
wait "$PY_PID"
