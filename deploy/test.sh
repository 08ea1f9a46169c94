#!/usr/bin/env bash
# Runs every test of the project, each suite even when an earlier one failed:
#   rust           Rust unit, API and resilience tests (real HTTP on port 0, a fresh database
#                  per test, dropped when the test ends);
#   pooler         both API suites through PgBouncer 1.24 in transaction mode, and what an old
#                  pooler (max_prepared_statements = 0) gets: a refused start;
#   tls            both binaries against a PostgreSQL that accepts only TLS: verify-full, require,
#                  and the one-line start-up errors for a wrong CA, host name or plaintext;
#   chart          the Helm chart (real Helm engine, Kubernetes schemas, checkov, invariants);
#   observability  promtool (metrics, alert rule unit tests), Prometheus (the dashboard's
#                  queries), the chart's migrate commands, an OTLP receiver, JSON logs;
#   fuzz           schemathesis against both OpenAPI documents;
#   contract       outside tools: openapi-spec-validator, Redocly and Spectral on both live
#                  OpenAPI documents, a generated Python client driving the API, cargo deny.
#   image          deploy/Dockerfile built with buildah (base images made from Debian packages,
#                  the runtime stage from host-built release binaries) and run with podman/runc
#                  as the chart runs it: migrate, serve, health, the API, SIGTERM (needs root).
# Prints one line with each suite's result, then `all: N passed, M failed` (N and M count tests:
# Rust tests, pytest tests, one per fuzzed document, one per image check), and exits non-zero
# if any suite failed.
# PostgreSQL: DATABASE_URL's server when set, else the server on 127.0.0.1:5432, else a
# throwaway cluster started here from the PostgreSQL binaries. The cluster and the suites'
# logs are removed on every exit, Ctrl-C included.
#   bash deploy/test.sh
#   TEST_SUITES=chart,fuzz bash deploy/test.sh     # only these suites
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

all_suites=(rust pooler tls chart observability fuzz contract image)
selected="${TEST_SUITES:-${all_suites[*]}}"
selected="${selected//,/ }"
for suite in $selected; do
  if [[ " ${all_suites[*]} " != *" $suite "* ]]; then
    echo "TEST_SUITES: unknown suite \`$suite\` (known: ${all_suites[*]})" >&2
    exit 2
  fi
done

# Each suite's output is kept here to count its tests at the end.
work="$(mktemp -d /tmp/todo-test.XXXXXX)"
cluster_stop=()
cleanup() {
  if ((${#cluster_stop[@]})); then "${cluster_stop[@]}" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The server URL (database `postgres`) every suite creates its own databases on.
if [[ -n "${DATABASE_URL:-}" ]]; then
  server_url="${DATABASE_URL%/*}/postgres"
elif pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  server_url="postgres://postgres@127.0.0.1:5432/postgres"
else
  bin="$(dirname "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
  dir="$work/pg"
  mkdir "$dir"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  as_user=()
  if [[ $(id -u) -eq 0 ]]; then chown postgres "$work" "$dir"; as_user=(runuser -u postgres --); fi
  "${as_user[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
  cluster_stop=("${as_user[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop)
  "${as_user[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
  server_url="postgres://postgres@127.0.0.1:$port/postgres"
  echo "no PostgreSQL server found: started a throwaway cluster on port $port"
fi
export DATABASE_URL="${DATABASE_URL:-$server_url}"

declare -A status
# run_suite NAME TITLE COMMAND…: runs it if selected, keeping its output and exit status.
run_suite() {
  local name=$1 title=$2
  shift 2
  [[ " $selected " == *" $name "* ]] || return 0
  echo "== $title"
  status[$name]=0
  "$@" 2>&1 | tee "$work/$name.log" || status[$name]=$?
}

run_suite rust "Rust: unit, API and resilience tests" \
  cargo test --workspace --locked --no-fail-fast
run_suite pooler "PostgreSQL through PgBouncer 1.24 in transaction mode: both API suites" \
  env PG_URL="${server_url%/postgres}" bash deploy/pooler/run.sh
run_suite tls "PostgreSQL with ssl=on: verify-full, require, wrong CA, wrong host name, plaintext" \
  bash deploy/tls/run.sh
run_suite chart "Helm chart: render, lint, Kubernetes schemas, checkov, invariants" \
  bash helm/tests/run.sh
run_suite observability "Observability: promtool, Prometheus scrape, OTLP traces, JSON logs" \
  env OBS_PG_URL="${server_url%/postgres}" bash deploy/observability/run.sh
run_suite fuzz "Fuzzing: schemathesis against both OpenAPI documents" \
  env FUZZ_ADMIN_URL="$server_url" bash deploy/fuzz/run.sh
run_suite contract "Outside tools: OpenAPI linters, a generated client, cargo deny" \
  env CONTRACT_PG_URL="${server_url%/postgres}" bash deploy/contract/run.sh
run_suite image "The image: deploy/Dockerfile built with buildah, run with podman as the chart runs it" \
  env PG_URL="${server_url%/postgres}" bash deploy/image/run.sh

# Counting reads logs that may hold no match at all: no `grep` may end the script here.
# matches LOG PATTERN: the parts of LOG's lines that match PATTERN, one per line.
matches() { grep -Eo "$2" "$1" 2>/dev/null || true; }
# total: the sum of the first number on each input line.
total() { awk 'match($0, /[0-9]+/) {s += substr($0, RSTART, RLENGTH)} END {print s + 0}'; }
# pytest's closing line, e.g. `2 failed, 40 passed, 1 skipped in 9.1s`, counted by OUTCOME.
pytest_count() {
  matches "$1" '[0-9]+ (passed|failed|errors?)\b.* in [0-9.]+s' | tail -1 |
    { grep -Eo "[0-9]+ $2" || true; } | total
}

total_passed=0 total_failed=0 results=() failed_any=0
for suite in "${all_suites[@]}"; do
  [[ -n "${status[$suite]+set}" ]] || continue
  log="$work/$suite.log"
  case $suite in
    rust | pooler)
      passed=$(matches "$log" '^test result: [A-Za-z]+\. [0-9]+ passed' | total)
      failed=$(matches "$log" '^test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' |
        awk '{s += $6} END {print s + 0}')
      ;;
    tls | chart | observability | contract)
      passed=$(pytest_count "$log" passed)
      failed=$(($(pytest_count "$log" failed) + $(pytest_count "$log" 'errors?')))
      ;;
    fuzz)
      passed=$(matches "$log" '^fuzz: [a-z-]+: passed' | wc -l)
      failed=$(matches "$log" '^fuzz: [a-z-]+: failed' | wc -l)
      cases=$(matches "$log" '^fuzz: [0-9]+ test cases in all' | total)
      ;;
    image)
      passed=$(matches "$log" '^image: [0-9]+ passed' | tail -1 | total)
      failed=$(matches "$log" '^image: [0-9]+ passed, [0-9]+ failed' | tail -1 | awk '{print $4 + 0}')
      ;;
  esac
  # A suite that failed before any test could report (a build error, a missing tool) is one
  # failure, so the total never says `0 failed` for a failed run.
  if ((status[$suite] != 0 && failed == 0)); then failed=1; fi
  verdict=passed
  if ((status[$suite] != 0)); then verdict=FAILED failed_any=1; fi
  detail="$passed passed, $failed failed"
  [[ $suite == fuzz ]] && detail="$detail; ${cases:-0} schemathesis cases"
  results+=("$suite $verdict ($detail)")
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
done

summary="$(printf '%s; ' "${results[@]}")"
echo "suites: ${summary%; }"
echo "all: $total_passed passed, $total_failed failed"
exit "$failed_any"
