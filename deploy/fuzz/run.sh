#!/usr/bin/env bash
# Fuzzes both services against their own OpenAPI documents with schemathesis (every check):
# builds the two binaries, starts them on loopback against a fresh database on the local
# PostgreSQL (created here, dropped at the end), logs a user in through auth-service for a
# bearer token, and fails on any 5xx or any response the document does not describe.
#   bash deploy/fuzz/run.sh
# Settings (environment): FUZZ_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres),
# FUZZ_MAX_EXAMPLES (40), FUZZ_SEED (1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/suite-lib.sh
source deploy/suite-lib.sh

ADMIN_URL="${FUZZ_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-40}"
SEED="${FUZZ_SEED:-1}"
VENV=deploy/fuzz/.venv
WORK="$(mktemp -d -t todo-fuzz-XXXXXX)"
DB="todo_fuzz_$(date +%s)_$$"
PIDS=()

cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    psql "$ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
    if [ "$status" -ne 0 ]; then
        echo "fuzz: failed; service logs are in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT

echo "== schemathesis in $VENV"
if [ ! -x "$VENV/bin/schemathesis" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet 'schemathesis>=4,<5'
fi
"$VENV/bin/schemathesis" --version

echo "== building the services"
cargo build --quiet --bin auth-service --bin task-service
BIN="$(cargo_target_dir .)/debug"

echo "== database $DB"
psql "$ADMIN_URL" -qAtc "CREATE DATABASE \"$DB\"" >/dev/null
DATABASE_URL="$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$ADMIN_URL" "$DB")"
export DATABASE_URL
"$BIN/auth-service" migrate
"$BIN/task-service" migrate

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
AUTH_API=$(free_port) AUTH_ADMIN=$(free_port) TASKS_API=$(free_port) TASKS_ADMIN=$(free_port)
export JWT_SECRET="fuzzing-signing-key-that-is-long-enough-0123"
export MIGRATE_ON_START=false SHUTDOWN_DELAY_SECONDS=0 RUST_LOG=warn
unset OTEL_EXPORTER_OTLP_ENDPOINT

# Rate limits off and cheap hashes: the fuzzer sends thousands of requests from one address.
HTTP_ADDR="127.0.0.1:$AUTH_API" ADMIN_ADDR="127.0.0.1:$AUTH_ADMIN" \
    RATE_LIMIT_ENABLED=false BCRYPT_COST=10 \
    "$BIN/auth-service" serve >"$WORK/auth-service.log" 2>&1 &
PIDS+=($!)
HTTP_ADDR="127.0.0.1:$TASKS_API" ADMIN_ADDR="127.0.0.1:$TASKS_ADMIN" \
    AUTH_ADMIN_URL="http://127.0.0.1:$AUTH_ADMIN" \
    "$BIN/task-service" serve >"$WORK/task-service.log" 2>&1 &
PIDS+=($!)

for admin in "$AUTH_ADMIN" "$TASKS_ADMIN"; do
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break
        sleep 0.2
    done
    curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null
done

echo "== a user and a bearer token"
CREDENTIALS='{"email":"fuzz@example.com","password":"correct horse battery"}'
curl -fsS -H 'Content-Type: application/json' -d "$CREDENTIALS" \
    "http://127.0.0.1:$AUTH_API/api/v1/auth/register" >/dev/null
TOKEN="$(curl -fsS -H 'Content-Type: application/json' -d "$CREDENTIALS" \
    "http://127.0.0.1:$AUTH_API/api/v1/auth/login" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"

TOTAL=0
fuzz() {
    local name=$1 url=$2 out="$WORK/$1.txt"
    echo "== schemathesis: $name ($url)"
    local status=0
    "$VENV/bin/schemathesis" --config-file deploy/fuzz/schemathesis.toml run "$url" \
        --checks all \
        --max-examples "$MAX_EXAMPLES" \
        --seed "$SEED" \
        --workers 1 \
        --request-timeout 15 \
        -H "Authorization: Bearer $TOKEN" \
        --no-color 2>&1 | tee "$out" || status=$?
    local cases
    # The summary reads "Test cases:" then "  <n> generated, …" on the next line.
    cases="$(awk '/^Test cases:/ { getline; print $1 }' "$out" | tail -1)"
    echo "fuzz: $name: ${cases:-?} test cases"
    # deploy/test.sh counts these lines: one test per document.
    if [ "$status" -eq 0 ]; then echo "fuzz: $name: passed"; else echo "fuzz: $name: failed"; fi
    TOTAL=$((TOTAL + ${cases:-0}))
    return "$status"
}

RESULT=0
fuzz auth-service "http://127.0.0.1:$AUTH_API/api/v1/auth/openapi.json" || RESULT=1
fuzz task-service "http://127.0.0.1:$TASKS_API/api/v1/tasks/openapi.json" || RESULT=1
echo "fuzz: $TOTAL test cases in all"
if [ "$RESULT" -ne 0 ]; then
    echo "fuzz: schemathesis found failures (see above)" >&2
fi
exit "$RESULT"
