#!/usr/bin/env bash
# Runs every test of the project:
#   1. Rust unit, API and resilience tests (real HTTP on port 0, a fresh database per test);
#   2. the Helm chart (real Helm engine, Kubernetes schemas, checkov, invariants);
#   3. observability with real tools (promtool, Prometheus, an OTLP receiver, JSON logs);
#   4. schemathesis fuzzing of both OpenAPI documents.
# PostgreSQL: DATABASE_URL's server when set, else the server on 127.0.0.1:5432, else a
# throwaway cluster started here from the PostgreSQL binaries and removed at exit.
#   bash deploy/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Keep a copy of the output to total the suites' counts at the end.
log="$(mktemp /tmp/todo-test-log.XXXXXX)"
exec > >(tee "$log") 2>&1

# The server URL (database `postgres`) every suite creates its own databases on.
if [[ -n "${DATABASE_URL:-}" ]]; then
  server_url="${DATABASE_URL%/*}/postgres"
elif pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  server_url="postgres://postgres@127.0.0.1:5432/postgres"
else
  bin="$(dirname "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
  dir="$(mktemp -d /tmp/todo-test-pg.XXXXXX)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  as_user=()
  if [[ $(id -u) -eq 0 ]]; then chown postgres "$dir"; as_user=(runuser -u postgres --); fi
  "${as_user[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
  "${as_user[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
  trap '"${as_user[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1; rm -rf "$dir"' EXIT
  server_url="postgres://postgres@127.0.0.1:$port/postgres"
  echo "no PostgreSQL server found: started a throwaway cluster on port $port"
fi
export DATABASE_URL="${DATABASE_URL:-$server_url}"

echo "== Rust: unit, API and resilience tests"
cargo test --workspace --locked

echo "== Helm chart: render, lint, Kubernetes schemas, checkov, invariants"
bash helm/tests/run.sh

echo "== Observability: promtool, Prometheus scrape, OTLP traces, JSON logs"
OBS_PG_URL="${server_url%/postgres}" bash deploy/observability/run.sh

echo "== Fuzzing: schemathesis against both OpenAPI documents"
FUZZ_ADMIN_URL="$server_url" bash deploy/fuzz/run.sh

cargo_passed=$(grep -Eo '^test result: ok\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
pytest_passed=$(grep -Eo '^(=+ )?[0-9]+ passed' "$log" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' | awk '{s += $1} END {print s + 0}')
fuzz_cases=$(grep -Eo '^fuzz: [0-9]+ test cases in all' "$log" | grep -Eo '[0-9]+' | tail -1)
rm -f "$log"
echo "Rust tests: $cargo_passed passed; Python suites: $pytest_passed passed; schemathesis: ${fuzz_cases:-0} cases"
echo "all: $((cargo_passed + pytest_passed)) passed, 0 failed"
