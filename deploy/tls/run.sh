#!/usr/bin/env bash
# PostgreSQL over TLS, as Neon and managed databases serve it, with the real binaries: starts a
# throwaway cluster from the PostgreSQL binaries with ssl=on, a CA and a server certificate made
# here with openssl (subjectAltName localhost and 127.0.0.1), and pg_hba.conf refusing every TCP
# connection without TLS (`hostnossl all all all reject`). It listens on 127.0.0.1 and 127.0.0.2
# (both loopback; the certificate does not name the second). Then the tests (test_tls.py) run
# both services' `migrate` and `serve` against it: verify-full with sslrootcert (in the URL, or
# PGSSLROOTCERT/PGSSLMODE as the chart's databaseCA sets them) and require serve the API; a
# wrong CA, a host name the certificate does not name, and a plaintext connection each stop
# `migrate` and `serve` at start-up with one line naming the cause.
# Needs the PostgreSQL server binaries (initdb, pg_ctl, psql), openssl, python3 (3.10+), cargo,
# and PyPI on the first run.
#   bash deploy/tls/run.sh              # all tests
#   bash deploy/tls/run.sh -k require   # pytest arguments pass through
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$here/.venv"   # ignored by deploy/tls/.gitignore
# shellcheck source=deploy/suite-lib.sh
source "$repo/deploy/suite-lib.sh"

if ! command -v openssl >/dev/null; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends openssl >/dev/null
fi
pinned_venv "$venv" "$here/requirements.txt"

(cd "$repo" && cargo build --locked -p auth-service -p task-service)
target_dir="$(cargo_target_dir "$repo")"
export TLS_BIN_DIR="${TLS_BIN_DIR:-$target_dir/debug}"

bin="$(dirname "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
work="$(mktemp -d /tmp/todo-tls.XXXXXX)"
as_user=()
stop=()
cleanup() {
  if ((${#stop[@]})); then "${stop[@]}" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The certificates: the CA the server's certificate is signed by, and another CA (the wrong one).
certs="$work/certs"
mkdir "$certs"
ssl() { openssl "$@" 2>/dev/null; }
for ca in ca other-ca; do
  ssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "$certs/$ca.key" -out "$certs/$ca.crt" \
    -subj "/CN=todo test $ca" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
done
ssl req -newkey rsa:2048 -nodes -keyout "$certs/server.key" -out "$certs/server.csr" -subj "/CN=localhost"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > "$certs/server.ext"
ssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" -CAcreateserial \
  -days 2 -extfile "$certs/server.ext" -out "$certs/server.crt"
chmod 0600 "$certs/server.key"
chmod 0644 "$certs"/*.crt
chmod 0755 "$work" "$certs"

dir="$work/pg"
mkdir "$dir"
if [[ $(id -u) -eq 0 ]]; then chown postgres "$dir" "$certs/server.key"; as_user=(runuser -u postgres --); fi
"${as_user[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
cat > "$dir/data/pg_hba.conf" <<HBA
# The tests' own admin connections use the Unix socket; every TCP connection must use TLS.
local     all all             trust
hostssl   all all 127.0.0.0/8 trust
hostnossl all all all         reject
HBA
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
stop=("${as_user[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop)
"${as_user[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -o "-p $port -k $dir \
  -c listen_addresses=127.0.0.1,127.0.0.2 -c fsync=off -c ssl=on \
  -c ssl_cert_file=$certs/server.crt -c ssl_key_file=$certs/server.key" start >/dev/null
echo "PostgreSQL with ssl=on on 127.0.0.1:$port and 127.0.0.2:$port; TCP without TLS is refused"

psql="$bin/psql"
[[ -x "$psql" ]] || psql="$(command -v psql)"
export TLS_PG_PORT="$port" TLS_PG_SOCKET="$dir" TLS_PSQL="$psql"
export TLS_CA="$certs/ca.crt" TLS_OTHER_CA="$certs/other-ca.crt"
cd "$here"
status=0
"$venv/bin/python" -m pytest "$@" || status=$?
if ((status != 0)); then
  echo "PostgreSQL's log (last 20 lines):"
  tail -20 "$dir/server.log" || true
fi
exit $status
