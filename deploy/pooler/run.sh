#!/usr/bin/env bash
# The API test suites of both services through a real PgBouncer 1.24 in transaction mode, as
# Neon's pooled endpoint and most managed poolers serve PostgreSQL: the services and the tests'
# own pools connect through it, while templates, migrations and the drops go to the server
# directly (as the chart's migrate Jobs use MIGRATION_DATABASE_URL).
#
# PgBouncer runs with its defaults except what transaction pooling needs: pool_mode=transaction,
# max_prepared_statements=100 (protocol-level prepared statements across server connections),
# and generous client limits for parallel tests. No ignore_startup_parameters: the services
# must not send a parameter a default pooler refuses.
#
# Then a second PgBouncer with max_prepared_statements = 0 (an old pooler): the task-service API
# tests named `old_pooler` (ignored in plain runs) show that it breaks sqlx's prepared statements
# and that both services refuse to start through it, saying what to set.
#
# Needs: PG_URL (a server URL without a database, e.g. postgres://postgres@127.0.0.1:5432, the
# default; a trailing /postgres is dropped),
# cargo. PgBouncer 1.24 is built once from Debian trixie's source into ~/.cache/todo (bookworm's
# 1.18 has no max_prepared_statements), about 15 s.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

server="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
server="${server%/postgres}"
host_port="${server##*@}"
pg_host="${host_port%%:*}"
pg_port="${host_port##*:}"

cache="$HOME/.cache/todo/pgbouncer-trixie"
pgbouncer="$cache/pgbouncer"
if [[ ! -x "$pgbouncer" ]]; then
  echo "building PgBouncer from Debian trixie's source (once)"
  apt-get install -y -qq --no-install-recommends libevent-dev libc-ares-dev pkg-config make gcc dpkg-dev >/dev/null
  src="$(mktemp -d)"
  # The machine's own Debian mirror (deb822 or one-line sources), for trixie's source package.
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  [[ -n "$mirror" ]] || mirror="$(awk '$1 == "deb" && $2 ~ /^http/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  [[ -n "$mirror" ]] || { echo "no Debian mirror found in /etc/apt: cannot fetch PgBouncer's source" >&2; exit 1; }
  echo "deb-src $mirror trixie main" > "$src/sources.list"
  mkdir -p "$src/lists/partial"
  # A private list directory: the machine's own package lists stay as they are.
  apt_opts=(-o "Dir::Etc::SourceList=$src/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$src/lists")
  apt-get "${apt_opts[@]}" update -qq 2>&1 | grep -v 'unsandboxed' || true
  (cd "$src" && apt-get "${apt_opts[@]}" source --download-only pgbouncer >/dev/null 2>&1)
  tar -xzf "$src"/pgbouncer_*.orig.tar.gz -C "$src"
  (cd "$src"/pgbouncer-*/ && ./configure --without-systemd --without-pam >/dev/null && make -s -j2 >/dev/null)
  mkdir -p "$cache"
  cp "$src"/pgbouncer-*/pgbouncer "$pgbouncer"
  rm -rf "$src"
fi
version="$("$pgbouncer" --version | head -1 | awk '{print $2}')"
[[ "$version" == 1.2[4-9]* || "$version" == 1.[3-9]* ]] || { echo "PgBouncer $version: 1.24 or later is needed (max_prepared_statements)" >&2; exit 1; }

work="$(mktemp -d /tmp/todo-pooler.XXXXXX)"
pids=()
# `|| true`: under `set -e` a failing command in the trap would replace the tests' exit status.
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
# PgBouncer refuses to run as root: then it runs as postgres, from a copy that user can read.
cp "$pgbouncer" "$work/pgbouncer"
echo '"postgres" ""' > "$work/users.txt"
as_user=()
if [[ $(id -u) -eq 0 ]]; then as_user=(runuser -u postgres --); fi

# start_pgbouncer NAME MAX_PREPARED_STATEMENTS: a PgBouncer in transaction mode; sets `port`.
start_pgbouncer() {
  local name=$1 prepared=$2
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  cat > "$work/$name.ini" <<INI
[databases]
* = host=$pg_host port=$pg_port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $work/users.txt
pool_mode = transaction
max_prepared_statements = $prepared
max_client_conn = 2000
default_pool_size = 10
max_user_connections = 60
logfile = $work/$name.log
INI
  if [[ $(id -u) -eq 0 ]]; then chown -R postgres "$work"; fi
  # -q: its log goes to the file only (printed if the tests fail).
  "${as_user[@]}" "$work/pgbouncer" -q "$work/$name.ini" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { echo "PgBouncer did not start:" >&2; cat "$work/$name.log" >&2 || true; exit 1; }
    sleep 0.1
  done
  echo "PgBouncer $version on 127.0.0.1:$port, transaction mode, max_prepared_statements=$prepared, in front of $pg_host:$pg_port"
}

start_pgbouncer pgbouncer 100
# The tests' databases are made on the server, then used through the pooler.
export DATABASE_URL="$server/postgres"
export TEST_POOLER_URL="postgres://postgres@127.0.0.1:$port/postgres"
status=0
cargo test --locked --no-fail-fast -p auth-service -p task-service --test api || status=$?
if ((status != 0)); then
  echo "PgBouncer's log (warnings and errors):"
  grep -E "WARNING|ERROR" "$work/pgbouncer.log" | grep -v "when not linked" | tail -40 || true
fi

# An old pooler: max_prepared_statements = 0 passes sqlx's statement names through to shared
# server connections. The tests (ignored in the plain runs) show what that breaks, and that both
# services refuse to start through it with a message saying what to set.
start_pgbouncer old-pgbouncer 0
TEST_OLD_POOLER_URL="postgres://postgres@127.0.0.1:$port" \
  cargo test --locked --no-fail-fast -p task-service --test api -- --ignored old_pooler || status=$?
exit $status
