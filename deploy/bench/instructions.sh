#!/usr/bin/env bash
# Instructions per request in task-service, counted by valgrind's callgrind:
#
#   deploy/bench/instructions.sh [BIN_DIR…]
#
# A rate on this 2-core machine moves by ±10 % from round to round, more than most changes to
# the request path make. callgrind counts the instructions task-service itself runs, not time,
# so the same build gives nearly the same count whatever else the machine does (within 1 % from
# run to run, RESULTS.md run 48): the number to put beside a side-by-side rate (compare.sh) when
# the rate cannot tell.
# What it leaves out: the kernel's share (the system calls, about 40 % of a single read's CPU)
# and PostgreSQL's.
#
# BIN_DIR: directories holding an auth-service and a task-service binary, one column each. By
# default this tree's release build (built first). compare.sh keeps each revision it has built in
# ~/.cache/todo/bench-base/<full sha>/bench-bin.
#
# For each build: a fresh database on the server of DATABASE_URL (default 127.0.0.1:5432, user
# postgres), auth-service as usual, task-service under callgrind with counting off; one user with
# 100 tasks. Then per row: a warm-up (1 000 requests), counting on for a fixed number of requests
# from `oha -c 32` (every answer must be a success), counting off. Counting only between those
# points leaves out start-up and warm-up.
#
# Settings (environment): INSTR_READS=20000 INSTR_LISTS=5000 INSTR_CREATES=5000
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
READS="${INSTR_READS:-20000}" LISTS="${INSTR_LISTS:-5000}" CREATES="${INSTR_CREATES:-5000}"

log() { printf '[instructions %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
need() { command -v "$1" >/dev/null || { echo "$1 not found: $2" >&2; exit 1; }; }
need valgrind "apt-get install valgrind"
need callgrind_control "apt-get install valgrind"
need psql "install the PostgreSQL client tools"
need curl "apt-get install curl"
OHA="$(command -v oha || echo "$HOME/.cargo/bin/oha")"
[[ -x "$OHA" ]] || { echo "oha not found: cargo install --locked oha" >&2; exit 1; }

bin_dirs=("$@")
if [[ ${#bin_dirs[@]} -eq 0 ]]; then
  log "building release binaries"
  cargo build --release --locked -p auth-service -p task-service >&2
  bin_dirs=("$ROOT/target/release")
fi

SERVER_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
BASE="${SERVER_URL%%\?*}"
QUERY=""; [[ "$SERVER_URL" == *\?* ]] && QUERY="?${SERVER_URL#*\?}"
ADMIN_URL="${BASE%/*}/postgres$QUERY"
DB="todo_instructions_$$"
OUT="$(mktemp -d)"
PIDS=()

stop_all() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  PIDS=()
  psql "$ADMIN_URL" -qAt -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
}
trap 'rc=$?; stop_all; rm -rf "$OUT"; exit $rc' EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_ready() {
  for _ in $(seq 1 600); do
    curl -sf "http://$1/readyz" >/dev/null && return 0
    sleep 0.2
  done
  echo "not ready: $1" >&2
  exit 1
}

# `oha` with the user's token; fails unless every answer is a 2xx.
load() {
  local n="$1"; shift
  "$OHA" -n "$n" -c 32 --no-tui --output-format json -H "Authorization: Bearer $TOKEN" "$@" \
    | python3 -c 'import json, sys
codes = json.load(sys.stdin)["statusCodeDistribution"]
bad = {c: n for c, n in codes.items() if not c.startswith("2")}
sys.exit(f"answers other than 2xx: {bad}" if bad else 0)'
}

# Instructions per request of one row: after a warm-up, count `n` requests, then dump the count
# (each dump holds what was counted since the last one, in a file of its own).
count() {
  local pid="$1" n="$2"; shift 2
  load 1000 "$@"
  callgrind_control -z "$pid" >/dev/null 2>&1
  callgrind_control -i on "$pid" >/dev/null 2>&1
  load "$n" "$@"
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1
  local dump
  dump="$(ls -t "$OUT"/callgrind.out.* | head -n 1)"
  awk -v n="$n" '/^totals:/ {printf "%d\n", $2 / n}' "$dump"
}

declare -A result
for dir in "${bin_dirs[@]}"; do
  log "build: $dir"
  psql "$ADMIN_URL" -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$DB\"" >/dev/null
  url="${BASE%/*}/$DB$QUERY"
  auth_http="127.0.0.1:$(free_port)" auth_admin="127.0.0.1:$(free_port)"
  task_http="127.0.0.1:$(free_port)" task_admin="127.0.0.1:$(free_port)"
  common=(DATABASE_URL="$url" JWT_SECRET="instructions-bench-secret-0123456789abcdef"
    RATE_LIMIT_ENABLED=false BCRYPT_COST=10 SHUTDOWN_DELAY_SECONDS=0 RUST_LOG=info
    TASKS_MAX_PER_USER=2000000000)
  env "${common[@]}" HTTP_ADDR="$auth_http" ADMIN_ADDR="$auth_admin" \
    "$dir/auth-service" serve >"$OUT/auth.log" 2>&1 &
  PIDS+=($!)
  wait_ready "$auth_admin"
  env "${common[@]}" HTTP_ADDR="$task_http" ADMIN_ADDR="$task_admin" \
    AUTH_ADMIN_URL="http://$auth_admin" \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
    "$dir/task-service" serve >"$OUT/task.log" 2>&1 &
  task_pid=$!
  PIDS+=("$task_pid")
  wait_ready "$task_admin"

  account='{"email":"instructions@example.com","password":"correct horse battery staple"}'
  curl -sf -X POST "http://$auth_http/api/v1/auth/register" -H 'Content-Type: application/json' \
    -d "$account" >/dev/null
  TOKEN="$(curl -sf -X POST "http://$auth_http/api/v1/auth/login" \
    -H 'Content-Type: application/json' -d "$account" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"
  ids=()
  for i in $(seq 1 100); do
    ids+=("$(curl -sf -X POST "http://$task_http/api/v1/tasks" -H "Authorization: Bearer $TOKEN" \
      -H 'Content-Type: application/json' -d "{\"title\":\"task $i\"}" \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')")
  done
  # Any of the 100 tasks, at random: oha draws each URL from this pattern.
  one_of="($(IFS='|'; echo "${ids[*]}"))"

  result["$dir|GET /api/v1/tasks/{id}"]="$(count "$task_pid" "$READS" \
    --rand-regex-url "http://$task_http/api/v1/tasks/$one_of")"
  result["$dir|GET /api/v1/tasks (100 tasks)"]="$(count "$task_pid" "$LISTS" \
    "http://$task_http/api/v1/tasks")"
  result["$dir|POST /api/v1/tasks"]="$(count "$task_pid" "$CREATES" -m POST \
    -T application/json -d '{"title":"counted create"}' "http://$task_http/api/v1/tasks")"
  stop_all
  rm -f "$OUT"/callgrind.out*
done

header="| request (requests counted) |"; rule="|---|"
for dir in "${bin_dirs[@]}"; do header+=" \`$dir\` |"; rule+="---:|"; done
[[ ${#bin_dirs[@]} -gt 1 ]] && { header+=" last ÷ first |"; rule+="---:|"; }
echo "$header"; echo "$rule"
for row in "GET /api/v1/tasks/{id}|$READS" "GET /api/v1/tasks (100 tasks)|$LISTS" \
  "POST /api/v1/tasks|$CREATES"; do
  name="${row%|*}" line="| \`${row%|*}\` (${row#*|}) |"
  for dir in "${bin_dirs[@]}"; do line+=" ${result[$dir|$name]} |"; done
  if [[ ${#bin_dirs[@]} -gt 1 ]]; then
    first="${result[${bin_dirs[0]}|$name]}" last="${result[${bin_dirs[-1]}|$name]}"
    line+=" $(python3 -c "print(f'{$last / $first:.3f}')") |"
  fi
  echo "$line"
done
