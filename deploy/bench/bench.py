#!/usr/bin/env python3
"""The benchmark driver behind deploy/bench/run.sh (standard library only).

run.sh builds the binaries, finds the tools, creates the bench database and then runs this with
the settings in the environment. This starts both services, seeds, drives the load, measures
CPU time per process from /proc, and prints one table (also written to $BENCH_OUT/report.md).
Every process it starts is stopped in `finally`.
"""

import base64
import concurrent.futures
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import uuid
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ENV = os.environ
ROOT = Path(ENV["BENCH_ROOT"])
# The binaries under test: this tree's release build, or another build's (a before/after run).
BIN_DIR = Path(ENV.get("BENCH_BIN_DIR") or ROOT / "target" / "release")
OUT = Path(ENV["BENCH_OUT"])
DB_URL = ENV["BENCH_DATABASE_URL"]
DB_NAME = ENV["BENCH_DB"]
PSQL = ENV.get("PSQL", "psql")
PGBENCH = ENV.get("PGBENCH", "pgbench")
OHA = ENV.get("OHA", "")
WRK = ENV.get("WRK", "")
SECONDS = int(ENV.get("BENCH_SECONDS", "10"))
ROUNDS = int(ENV.get("BENCH_ROUNDS", "3"))
# The rate each endpoint and its floor are run at for the database-CPU comparison, as a fraction
# of the endpoint's full-speed rate in the same round: below what saturates the machine.
EQUAL_RATE_FRACTION = float(ENV.get("BENCH_EQUAL_RATE_FRACTION", "0.7"))
# Tasks another user inserts before round 2 (then ANALYZE): the skewed shape of the list rows.
BULK_OTHER = int(ENV.get("BENCH_BULK_OTHER", "38000"))
CONCURRENCY = [int(c) for c in ENV.get("BENCH_CONCURRENCY", "32 256").split()]
PIN = ENV.get("BENCH_PIN", "1") == "1"
SERVICE_CPU = ENV.get("BENCH_SERVICE_CPU", "0")
LOAD_CPU = ENV.get("BENCH_LOAD_CPU", "1")
BCRYPT_COST = int(ENV.get("BCRYPT_COST", "12"))
PG_SCALE = int(ENV.get("BENCH_PGBENCH_SCALE", "10"))
BIG_USERS = int(ENV.get("BENCH_BIG_USERS", "10000"))
BIG_TASKS = int(ENV.get("BENCH_BIG_TASKS_PER_USER", "100"))
TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
PASSWORD = "bench-password-1234"
SECRET = "bench-secret-" + os.urandom(16).hex()
# Each service in a session of its own (as in containers, each is then a scheduling group of its
# own under autogroup), or all processes in the harness's session ("shared").
OWN_SESSIONS = ENV.get("BENCH_SESSIONS", "own") == "own"
# Only the rows whose name matches this regex (and the limits they are read against); all by default.
ONLY = re.compile(ENV.get("BENCH_ONLY", ""))
TIMEOUT = "20s"  # per request; a slower answer counts as a timeout
# The login storm is measured twice: auth-service unlimited, and restarted under this CPU limit
# (cores; the chart's authService.resources.limits.cpu), as a container gets it: a cgroup quota.
# "" skips the limited pass.
AUTH_CPU_LIMIT = ENV.get("BENCH_AUTH_CPU_LIMIT", "1")
# task-service settings the single read is measured under, side by side (KEY=VALUE each; the
# first is the baseline): the pool size against the seed's 20, logging (RUST_LOG=warn turns
# the per-request span off: with no exporter, the JSON log layer is its only consumer), and one
# runtime worker thread instead of one per core (what the chart's 500m CPU limit gives it).
DEFAULT_TASK_VARIANTS = ("DATABASE_MAX_CONNECTIONS=20 DATABASE_MAX_CONNECTIONS=8 "
                         "DATABASE_MAX_CONNECTIONS=4 RUST_LOG=warn TOKIO_WORKER_THREADS=1")
# ... and the create under each of these (the default first): how many coalesced create
# statements may run at once (0 = one statement per create).
DEFAULT_CREATE_VARIANTS = ("CREATE_COALESCING_IN_FLIGHT=2 CREATE_COALESCING_IN_FLIGHT=4 "
                           "CREATE_COALESCING_IN_FLIGHT=8 CREATE_COALESCING_IN_FLIGHT=0")
# ... and the list under each of these: with the pages it answered kept (the default 16 MiB),
# and with none, every list reading its rows (what the list cost before pages were kept).
DEFAULT_LIST_VARIANTS = "LIST_CACHE_MAX_BYTES=16777216 LIST_CACHE_MAX_BYTES=0"
# Settings task-service runs with for the whole run (KEY=VALUE each), the storm included; the
# variants above are measured on top of them.
TASK_ENV = dict(kv.split("=", 1) for kv in ENV.get("BENCH_TASK_ENV", "").split())

children: list[subprocess.Popen] = []


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if PIN else argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(sql: str, db_url: str = DB_URL) -> str:
    out = subprocess.run(
        [PSQL, db_url, "-v", "ON_ERROR_STOP=1", "-qAt", "-f", "-"], input=sql,
        check=True, capture_output=True, text=True, timeout=600,
    )
    return out.stdout.strip()


def http(method: str, url: str, body=None, token=None, timeout=30.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# ---------------------------------------------------------------- CPU and memory accounting

def stat_fields(pid: int) -> list[str]:
    """`/proc/<pid>/stat` from field 3 (state) on: [0] state, [1] ppid, [11] utime, [12] stime,
    [13] cutime, [14] cstime. Raises OSError if the process is gone."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2:].split()


def own_ticks(fields: list[str]) -> int:
    return int(fields[11]) + int(fields[12])


def proc_ticks(pid: int) -> tuple[int, int]:
    """(utime+stime, cutime+cstime) of a process, in clock ticks; (0, 0) if it is gone."""
    try:
        fields = stat_fields(pid)
    except OSError:
        return 0, 0
    return own_ticks(fields), int(fields[13]) + int(fields[14])


def ppid_of(pid: int) -> int:
    return int(stat_fields(pid)[1])


def postmaster_pid() -> int:
    pid = int(psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"))
    return ppid_of(pid)


def children_of(pid: int) -> dict[int, list[str]]:
    """The live and not yet reaped children of `pid`, each with its `stat_fields` (state `Z` =
    exited)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = stat_fields(int(entry))
        except OSError:
            continue
        if int(fields[1]) == pid:
            children[int(entry)] = fields
    return children


def cluster_ticks(postmaster: int) -> tuple[int, dict[int, list[str]]]:
    """CPU of the whole PostgreSQL cluster: the postmaster, its live children, and the children
    it has reaped (their time lands in its cutime/cstime when it waits for them); and its
    children. Read again until the children are the same before and after the read: a child
    reaped between the reading of the postmaster's cutime and of its own stat is counted in
    neither (measured: a run lost up to 65 % of its database CPU when pgbench's 32 backends
    exited while the cluster was read). The children are read first: one reaped after its own
    read and before the postmaster's would count twice, and is missing from the second list."""
    for _ in range(20):
        children = children_of(postmaster)
        own, reaped = proc_ticks(postmaster)
        if children_of(postmaster).keys() == children.keys():
            break
    return own + reaped + sum(own_ticks(fields) for fields in children.values()), children


def settled_cluster_ticks(postmaster: int) -> int:
    """`cluster_ticks` once the backends of the connections a run closed have exited and been
    reaped (their last CPU then counts in the run): no child is a zombie and the children are the
    same in two reads 100 ms apart; at most 3 s."""
    deadline = time.monotonic() + 3.0
    ticks, children = cluster_ticks(postmaster)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        ticks, now = cluster_ticks(postmaster)
        if now.keys() == children.keys() and all(fields[0] != "Z" for fields in now.values()):
            break
        children = now
    return ticks


def machine_busy_ticks() -> int:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class Cpu:
    """CPU seconds used by each party between `start()` and `stop()`."""

    def __init__(self, services: dict, postmaster: int):
        self.services = services
        self.postmaster = postmaster

    def snapshot(self, settle: bool = False) -> dict:
        snap = {name: proc_ticks(p.pid)[0] for name, p in self.services.items()}
        snap["wall"] = time.monotonic()
        snap["pg"] = settled_cluster_ticks(self.postmaster) if settle else cluster_ticks(self.postmaster)[0]
        snap["machine"] = machine_busy_ticks()
        return snap

    def start(self):
        self.before = self.snapshot()

    def stop(self, loadgen_seconds: float) -> dict:
        after = self.snapshot(settle=True)
        d = {k: (after[k] - self.before[k]) / TICK for k in after if k != "wall"}
        d["wall"] = after["wall"] - self.before["wall"]
        d["load"] = loadgen_seconds
        ours = sum(d[k] for k in self.services) + d["pg"] + d["load"]
        d["other"] = max(0.0, d["machine"] - ours)
        return d


class ChildCpu:
    """CPU time of reaped children (the load generators), from getrusage(RUSAGE_CHILDREN)."""

    @staticmethod
    def now() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------- the services

class CpuLimit:
    """A cgroup with a CPU quota, as Kubernetes gives a container with `resources.limits.cpu`:
    the kernel throttles the group past `cores` CPU-seconds per second, and the services size
    their thread pools from the quota (Rust's available_parallelism reads it, rounded down, at
    least 1), so the hashing threads number `max(1, floor(cores))`. cgroup v1's `cpu`
    controller or cgroup v2; needs root."""

    PERIOD_US = 100_000

    def __init__(self, name: str, cores: float):
        quota = int(cores * self.PERIOD_US)
        v1 = Path("/sys/fs/cgroup/cpu")
        v2 = Path("/sys/fs/cgroup")
        if (v1 / "cpu.cfs_quota_us").exists():
            self.dir = v1 / name
            self.dir.mkdir(exist_ok=True)
            (self.dir / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
            (self.dir / "cpu.cfs_quota_us").write_text(str(quota))
        elif "cpu" in (v2 / "cgroup.controllers").read_text().split():
            (v2 / "cgroup.subtree_control").write_text("+cpu")
            self.dir = v2 / name
            self.dir.mkdir(exist_ok=True)
            (self.dir / "cpu.max").write_text(f"{quota} {self.PERIOD_US}")
        else:
            raise RuntimeError("no writable cpu cgroup controller (BENCH_AUTH_CPU_LIMIT= skips this)")
        self.cores = cores

    def wrap(self, argv: list[str]) -> list[str]:
        """argv run inside the group from its first instruction (before it sizes its pools)."""
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.dir / "cgroup.procs"), *argv]

    def remove(self) -> None:
        try:
            self.dir.rmdir()
        except OSError:
            pass


def start_service(name: str, env: dict, admin: str,
                  limit: "CpuLimit | None" = None) -> tuple[subprocess.Popen, float]:
    binary = str(BIN_DIR / name)
    logf = open(OUT / f"{name}.log", "ab")
    t0 = time.monotonic()
    argv = pinned(SERVICE_CPU, [binary, "serve"])
    proc = subprocess.Popen(
        limit.wrap(argv) if limit else argv, env={**ENV, **env},
        stdout=logf, stderr=subprocess.STDOUT, start_new_session=OWN_SESSIONS,
    )
    children.append(proc)
    deadline = t0 + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {OUT / (name + '.log')}")
        try:
            with urllib.request.urlopen(f"http://{admin}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc, time.monotonic() - t0
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{name} not ready within 60 s")


def restart_service(old: subprocess.Popen, name: str, env: dict, admin: str,
                    limit: "CpuLimit | None" = None) -> subprocess.Popen:
    """Stops `old` and starts `name` again with `env` (and in `limit`, if given)."""
    stop(old)
    if old in children:
        children.remove(old)
    return start_service(name, env, admin, limit)[0]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ---------------------------------------------------------------- load generators

def oha(url: str, c: int, seconds: int, method="GET", body=None, token=None, regex=False,
        qps=None) -> list[str]:
    argv = [OHA, "-z", f"{seconds}s", "-c", str(c), "--no-tui", "--output-format", "json",
            "-t", TIMEOUT, "--wait-ongoing-requests-after-deadline", "-m", method]
    if regex:
        argv.append("--rand-regex-url")
    if qps:
        argv += ["-q", str(qps)]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    if body is not None:
        argv += ["-d", json.dumps(body), "-T", "application/json"]
    return pinned(LOAD_CPU, argv + [url])


def parse_oha(stdout: bytes) -> dict:
    data = json.loads(stdout)
    codes = {int(k): v for k, v in data["statusCodeDistribution"].items()}
    errors = data.get("errorDistribution", {})
    total_time = data["summary"]["total"]
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    timeouts = sum(v for k, v in errors.items() if "timeout" in k.lower())
    return {
        "rps": ok / total_time if total_time else 0.0,
        "p50_ms": data["metrics"]["latency_ms"]["p50"],
        "p99_ms": data["metrics"]["latency_ms"]["p99"],
        "n": ok + sum(v for k, v in codes.items() if not 200 <= k < 300),
        "e503": codes.get(503, 0),
        "e429": codes.get(429, 0),
        "eother": sum(v for k, v in codes.items() if not 200 <= k < 300 and k not in (503, 429)),
        "timeouts": timeouts,
        "conn_errors": sum(errors.values()) - timeouts,
        "error_kinds": errors,
    }


def parse_wrk(path: Path) -> dict:
    data = json.loads(path.read_text())
    codes = data["status"]
    secs = data["duration_us"] / 1e6
    ok = sum(v for k, v in codes.items() if k.isdigit() and 200 <= int(k) < 300)
    e503 = sum(v for k, v in codes.items() if k.startswith("503"))
    e429 = sum(v for k, v in codes.items() if k.startswith("429"))
    other = sum(v for k, v in codes.items() if not (k.isdigit() and 200 <= int(k) < 300)) - e503 - e429
    errs = data["errors"]
    return {
        "rps": ok / secs if secs else 0.0,
        "p50_ms": data["p50_us"] / 1000, "p99_ms": data["p99_us"] / 1000,
        "n": data["requests"], "e503": e503, "e429": e429, "eother": other,
        "timeouts": errs["timeout"],
        "conn_errors": errs["connect"] + errs["read"] + errs["write"],
        "error_kinds": {k: v for k, v in codes.items() if not k.isdigit() or not 200 <= int(k) < 300},
        "exhausted": data["exhausted"],
    }


# ---------------------------------------------------------------- main

def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    report: dict = {"settings": {
        "seconds": SECONDS, "rounds": ROUNDS, "concurrency": CONCURRENCY, "pinned": PIN,
        "service_cpu": SERVICE_CPU, "load_cpu": LOAD_CPU, "bcrypt_cost": BCRYPT_COST,
        "cores": CORES, "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        # service settings passed through from the environment (the rest are the defaults)
        "service_env": {k: v for k, v in sorted(ENV.items())
                        if k.startswith(("BCRYPT_", "DATABASE_")) and k not in ("BCRYPT_COST", "BCRYPT_BENCH_BIN", "DATABASE_URL")}
                       | {f"task-service {k}": v for k, v in TASK_ENV.items()},
        "only": ENV.get("BENCH_ONLY", ""),
        "sessions": "own" if OWN_SESSIONS else "shared",
        "equal_rate_fraction": EQUAL_RATE_FRACTION,
        "bin_dir": str(BIN_DIR),
    }}

    # ---- bcrypt bound: one verification at the configured cost, timed by criterion.
    log("timing one bcrypt verification (criterion)")
    crit_home = OUT / "criterion"
    subprocess.run(pinned(SERVICE_CPU, [ENV["BCRYPT_BENCH_BIN"], "--bench", "--noplot"]),
                   env={**ENV, "CRITERION_HOME": str(crit_home), "BCRYPT_COST": str(BCRYPT_COST)},
                   check=True, stdout=subprocess.DEVNULL, timeout=300)
    est = json.loads((crit_home / "bcrypt" / "verify" / "new" / "estimates.json").read_text())
    hash_s = est["median"]["point_estimate"] / 1e9
    service_cores = len(cpu_list(SERVICE_CPU)) if PIN else CORES
    report["bcrypt"] = {"hash_ms": hash_s * 1000, "machine_bound_per_s": CORES / hash_s,
                        "service_cores": service_cores, "bound_per_s": service_cores / hash_s}
    log(f"bcrypt cost {BCRYPT_COST}: {hash_s * 1000:.1f} ms/hash, bound {service_cores / hash_s:.2f}/s "
        f"on the service's {service_cores} core(s)")

    # ---- services
    auth_http, auth_admin, task_http, task_admin = (f"127.0.0.1:{free_port()}" for _ in range(4))
    common_env = {
        "DATABASE_URL": DB_URL, "JWT_SECRET": SECRET, "RATE_LIMIT_ENABLED": "false",
        "BCRYPT_COST": str(BCRYPT_COST), "SHUTDOWN_DELAY_SECONDS": "0",
        "SHUTDOWN_TIMEOUT_SECONDS": "5", "RUST_LOG": ENV.get("BENCH_RUST_LOG", "info"),
        "LOG_FORMAT": ENV.get("BENCH_LOG_FORMAT", "json"),
    }
    auth_env = {**common_env, "HTTP_ADDR": auth_http, "ADMIN_ADDR": auth_admin}
    # The writer creates tens of thousands of tasks: the cap is lifted, but still checked.
    task_env = {**common_env, "HTTP_ADDR": task_http, "ADMIN_ADDR": task_admin,
                "AUTH_ADMIN_URL": f"http://{auth_admin}", "TASKS_MAX_PER_USER": "2000000000", **TASK_ENV}

    # First start migrates the empty database; the second is the steady-state start-up.
    log("starting services (first start migrates)")
    auth, t_auth_migrate = start_service("auth-service", auth_env, auth_admin)
    task, t_task_migrate = start_service("task-service", task_env, task_admin)
    stop(auth), stop(task)
    children.clear()
    auth, t_auth = start_service("auth-service", auth_env, auth_admin)
    task, t_task = start_service("task-service", task_env, task_admin)
    report["startup_s"] = {"auth-service": [t_auth_migrate, t_auth],
                           "task-service": [t_task_migrate, t_task]}
    services = {"auth": auth, "task": task}
    report["hashing_threads"] = hashing_threads(auth.pid)
    postmaster = postmaster_pid()
    cpu = Cpu(services, postmaster)

    auth_url = f"http://{auth_http}/api/v1/auth"
    task_url = f"http://{task_http}/api/v1/tasks"

    # ---- seed: real accounts through the API (real bcrypt hashes), the rest in SQL.
    log("seeding")

    def account(email: str) -> dict:
        status, _, body = http("POST", f"{auth_url}/register", {"email": email, "password": PASSWORD})
        if status not in (201, 409):
            raise RuntimeError(f"register {email}: {status} {body[:200]!r}")
        return login(email)

    def login(email: str) -> dict:
        status, _, body = http("POST", f"{auth_url}/login", {"email": email, "password": PASSWORD})
        if status != 200:
            raise RuntimeError(f"login {email}: {status} {body[:200]!r}")
        pair = json.loads(body)
        payload = pair["access_token"].split(".")[1]
        pair["sub"] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]
        return pair

    reader = account("reader@bench.example")   # 100 tasks: reads, list, complete
    writer = account("writer@bench.example")   # creates tasks, so the reader keeps 100
    psql(f"""INSERT INTO tasks.tasks (user_id, title, description, completed)
             SELECT '{reader["sub"]}', 'task ' || g, CASE WHEN g % 2 = 0 THEN 'a description' END,
                    g % 3 = 0 FROM generate_series(1, 100) g;
             ANALYZE tasks.tasks;""")
    reader_ids = [int(x) for x in psql(
        f"SELECT min(id), max(id) FROM tasks.tasks WHERE user_id = '{reader['sub']}'").split("|")]
    assert reader_ids[1] - reader_ids[0] == 99, reader_ids
    # ids 1..100 on a fresh table; the regex draws one of them per request
    id_regex = id_range_regex(reader_ids[0], reader_ids[1])

    idle_rss = {"auth-service": rss_kib(auth.pid), "task-service": rss_kib(task.pid)}
    report["rss_idle_kib"] = idle_rss
    loadgen = ChildCpu()

    def run_oha(label: str, argv: list[str]) -> dict:
        c0 = loadgen.now()
        cpu.start()
        proc = subprocess.run(argv, capture_output=True, timeout=SECONDS * 3 + 60)
        split = cpu.stop(loadgen.now() - c0)
        if proc.returncode != 0:
            raise RuntimeError(f"{label}: oha failed: {proc.stderr.decode()[-500:]}")
        (OUT / f"{label}.json").write_bytes(proc.stdout)
        res = parse_oha(proc.stdout)
        res["cpu"] = split
        return res

    # ---- the 100-row table: list p50 before the big table exists
    small_list = []
    for r in range(ROUNDS if ONLY.search("GET /api/v1/tasks (1M-row table)") else 0):
        log(f"list on the 100-row table, round {r + 1}")
        small_list.append(run_oha(f"list-small-r{r}", oha(task_url, 32, SECONDS, token=reader["access_token"])))
    report["list_small"] = small_list

    # ---- the big table: 10 000 users × 100 tasks, users' tasks interleaved over the heap
    log(f"inserting {BIG_USERS} users x {BIG_TASKS} tasks")
    t0 = time.monotonic()
    psql(f"""INSERT INTO auth.users (id, email, password_hash)
             SELECT gen_random_uuid(), 'user' || g || '@bench.example', u.password_hash
             FROM generate_series(1, {BIG_USERS}) g,
                  (SELECT password_hash FROM auth.users WHERE email = 'reader@bench.example') u;
             INSERT INTO tasks.tasks (user_id, title, description, completed)
             SELECT u.id, 'task ' || g, CASE WHEN g % 2 = 0 THEN 'a description of task ' || g END,
                    (g + u.n) % 3 = 0
             FROM generate_series(1, {BIG_TASKS}) g,
                  (SELECT id, row_number() OVER () AS n FROM auth.users
                   WHERE email LIKE 'user%@bench.example') u
             ORDER BY g, u.n;
             ANALYZE auth.users; ANALYZE tasks.tasks;""")
    report["seed_big_s"] = time.monotonic() - t0
    report["tasks_rows"] = int(psql("SELECT count(*) FROM tasks.tasks"))
    big = login(f"user{BIG_USERS // 2}@bench.example")
    # The list statement as task-service runs it, as the generic plan a prepared statement
    # settles on after five executions.
    report["explain"] = psql(f"""SET plan_cache_mode = force_generic_plan;
        PREPARE list_tasks(uuid, bigint, bigint) AS
          {(ROOT / "task-service/src/tasks/sql/list.sql").read_text().strip()};
        EXPLAIN (ANALYZE, BUFFERS) EXECUTE list_tasks('{big["sub"]}', {2**63 - 1}, 100);""")

    # ---- pgbench's tables in the same database
    log(f"pgbench -i -s {PG_SCALE}")
    subprocess.run([PGBENCH, "-i", "-q", "-s", str(PG_SCALE), DB_URL], check=True,
                   capture_output=True, timeout=600)

    # ---- the matrix, in alternating rounds
    tokens = {"reader": reader["access_token"], "writer": writer["access_token"],
              "big": big["access_token"]}
    rows = {}

    def add(key, res):
        rows.setdefault(key, []).append(res)

    def read_url():
        return f"{task_url}/{id_regex}"

    def writer_tasks() -> int:
        return int(psql(f"SELECT count(*) FROM tasks.tasks WHERE user_id = '{writer['sub']}'"))

    def run_floor(r: int, row: str, name: str, rate: float | None = None) -> None:
        """Floor `name` through pgbench as row `row`; the insert must insert one row per
        transaction (a row without an allowance is skipped)."""
        inserts = name == "pgbench, the insert"
        before = writer_tasks() if inserts else 0
        res = run_pgbench(cpu, loadgen, r, row, floors[name], rate)
        if inserts and writer_tasks() - before != res["transactions"]:
            raise RuntimeError(f"{row}: {writer_tasks() - before} rows inserted in "
                               f"{res['transactions']} transactions (no allowance?)")
        add((row, 32), res)

    cases = [
        ("GET /api/v1/tasks/{id}", lambda c, qps=None: oha(read_url(), c, SECONDS, token=tokens["reader"], regex=True, qps=qps)),
        ("GET /api/v1/tasks (100 tasks)", lambda c, qps=None: oha(task_url, c, SECONDS, token=tokens["reader"], qps=qps)),
        ("GET /api/v1/tasks (1M-row table)", lambda c, qps=None: oha(task_url, c, SECONDS, token=tokens["big"], qps=qps)),
        ("POST /api/v1/tasks", lambda c, qps=None: oha(task_url, c, SECONDS, "POST",
                                                       {"title": "Buy milk", "description": "two litres"},
                                                       token=tokens["writer"], qps=qps)),
        ("PATCH /api/v1/tasks/{id}/complete", lambda c, qps=None: oha(f"{task_url}/{id_regex}/complete", c, SECONDS,
                                                                     "PATCH", {"completed": True},
                                                                     token=tokens["reader"], regex=True, qps=qps)),
        ("POST /api/v1/auth/login", lambda c, qps=None: oha(f"{auth_url}/login", c, SECONDS, "POST",
                                                            {"email": "reader@bench.example", "password": PASSWORD}, qps=qps)),
    ]
    # Logins at a concurrency the hashing queue holds (slots + queue = 5 per core): the hashing
    # path itself, without a closed-loop client spinning on 503s next to it.
    fit_c = 5 * report["bcrypt"]["service_cores"]
    login_fit = ("POST /api/v1/auth/login (within queue)",
                 lambda c: oha(f"{auth_url}/login", c, SECONDS, "POST",
                               {"email": "reader@bench.example", "password": PASSWORD}))
    cases = [case for case in cases if ONLY.search(case[0])]
    # The database doing the endpoints' work itself, through pgbench with the same statements
    # and rows (prepared, parameters bound as task-service binds them): the floors the
    # endpoints are measured against. `-S` is pgbench's own primary-key select.
    floor_vars = {"reader": reader["sub"], "writer": writer["sub"], "after": str(2**63 - 1), "limit": "100",
                  "cap": task_env["TASKS_MAX_PER_USER"]}
    floors = {
        "pgbench -S -M prepared": None,
        "pgbench, the list query": sql_as_pgbench(ROOT / "task-service/src/tasks/sql/list.sql",
                                                  [":reader", ":after", ":limit"]),
        # The create's own statement: the insert within the writer's allowance (the cap's check
        # on the one count row the task lands in), as task-service runs it far from the cap.
        "pgbench, the insert": sql_as_pgbench(ROOT / "task-service/src/tasks/sql/create_within_allowance.sql",
                                              [":writer", "'Buy milk'", "'two litres'", ":cap"]),
    }
    floors = {name: (script, floor_vars) for name, script in floors.items()}
    # Sizes the first pool (twice this rate for the run's length); later pools follow the fastest
    # rate seen. Refresh ran at up to 6 300/s (run 17), past a first pool sized for 3 000/s.
    refresh_rate_guess = 8000.0
    for r in range(ROUNDS):
        if r == 1 and BULK_OTHER:
            # Another user's bulk insert, newer than every row of the reader, then ANALYZE: the
            # shape in which a plan that walks the table by id alone reads the other user's rows
            # for every page of the reader's list (the list rows after this must not drop).
            log(f"round {r + 1}: another user inserts {BULK_OTHER} tasks, then ANALYZE")
            psql(f"""INSERT INTO tasks.tasks (user_id, title)
                     SELECT '{uuid.uuid4()}'::uuid, 'bulk ' || g
                     FROM generate_series(1, {BULK_OTHER}) g;
                     ANALYZE tasks.tasks;""")
            report["bulk_other_before_round"] = r + 1
        order = cases if r % 2 == 0 else list(reversed(cases))
        for name, make in order:
            for c in CONCURRENCY:
                log(f"round {r + 1}: {name} c={c}")
                add((name, c), run_oha(f"{slug(name)}-c{c}-r{r}", make(c)))
        if ONLY.search(login_fit[0]):
            log(f"round {r + 1}: {login_fit[0]} c={fit_c}")
            add((login_fit[0], fit_c), run_oha(f"login-fit-c{fit_c}-r{r}", login_fit[1](fit_c)))
        for c in CONCURRENCY if ONLY.search("POST /api/v1/auth/refresh") else []:
            log(f"round {r + 1}: POST /api/v1/auth/refresh c={c}")
            res = run_refresh(auth_url, reader["sub"], c, r, cpu, loadgen, refresh_rate_guess)
            refresh_rate_guess = max(refresh_rate_guess, res["rps"])
            add(("POST /api/v1/auth/refresh", c), res)
        for name in floors:
            if not ONLY.search(name):
                continue
            if name == "pgbench, the insert":
                # The insert needs the writer's allowances, which a create through the API grants
                # (again, if the writer used them up or a bulk insert withdrew them); a row
                # without one is skipped, so the floor counts the rows it really inserted.
                status, _, _ = http("POST", task_url, {"title": "grants allowances"}, token=tokens["writer"])
                assert status == 201, f"the writer's create before the insert floor: {status}"
            log(f"round {r + 1}: {name} -c 32")
            run_floor(r, name, name)
        # Each endpoint and its floor again, one right after the other, both held to one rate
        # below the endpoint's full speed: what a request costs PostgreSQL against what its
        # statement costs it. PostgreSQL's CPU per statement grows as the rate falls (fewer
        # commits share a WAL flush, backends sleep and wake between statements), and it also
        # differs on a saturated machine, where the endpoint at full speed runs and its floor
        # at that rate does not; so neither side runs at full speed here. The pair's order
        # alternates with the rounds.
        pairs = [(floor, endpoint) for floor, endpoint in ENDPOINT_OF_FLOOR.items()
                 if ONLY.search(floor) and len(rows.get((endpoint, 32), [])) == r + 1]
        for name, endpoint in pairs:
            rate = EQUAL_RATE_FRACTION * rows[(endpoint, 32)][-1]["rps"]
            runs = [("endpoint", endpoint), ("floor", name)]
            for what, row in runs if r % 2 == 0 else reversed(runs):
                log(f"round {r + 1}: {row} at {rate:.0f}/s")
                if what == "endpoint":
                    # oha's `-q` holds all its connections together to the rate.
                    argv = dict(cases)[endpoint](32, qps=f"{rate:.0f}")
                    add((at_fixed_rate(row), 32), run_oha(f"{slug(row)}-fixed-rate-r{r}", argv))
                else:
                    run_floor(r, at_fixed_rate(row), name, rate)

    # Footprint after the matrix, before the storm restarts auth-service.
    report["rss_after_load_kib"] = {"auth-service": rss_kib(auth.pid), "task-service": rss_kib(task.pid)}
    report["rss_peak_kib"] = {"auth-service": rss_kib(auth.pid, "VmHWM"),
                              "task-service": rss_kib(task.pid, "VmHWM")}

    # ---- login storm: fixed-rate probes, idle and during a storm of logins. Two probes: a task
    # read (another process: the kernel shares the CPU between the two processes' scheduling
    # groups, whatever the threads' priorities) and auth-service's own GET /me (the same process
    # as the hashing threads, where their scheduling class decides).
    probe_qps = int(ENV.get("BENCH_PROBE_QPS", "200"))

    def probe_with_waits(label: str, argv: list[str]) -> dict:
        """A probe run, with each process's run-queue wait per probe request: where a request's
        time went waiting for a CPU (PostgreSQL: every process of the cluster)."""
        pids = {"task-service": lambda: [services["task"].pid],
                "postgres": lambda: [postmaster, *children_of(postmaster)],
                "auth-service": lambda: [services["auth"].pid]}
        before = {name: runqueue_wait_ns(get()) for name, get in pids.items()}
        res = run_oha(label, argv)
        res["runqueue_wait_us_per_request"] = {
            name: (runqueue_wait_ns(get()) - before[name]) / 1e3 / max(res["n"], 1)
            for name, get in pids.items()}
        return res

    def login_storm(label: str) -> dict:
        probes = {"task": (read_url(), tokens["reader"], True),
                  "me": (f"{auth_url}/me", reader["access_token"], False)}
        storm = {"idle": [], "storm": [], "me_idle": [], "me_storm": [],
                 "hashing_threads": hashing_threads(services["auth"].pid)}
        for r in range(ROUNDS):
            log(f"{label}: probes at {probe_qps}/s, idle then during a login storm, round {r + 1}")
            argv = {k: oha(url, 8, SECONDS, token=token, regex=regex, qps=probe_qps)
                    for k, (url, token, regex) in probes.items()}
            storm["idle"].append(probe_with_waits(f"{label}-probe-idle-r{r}", argv["task"]))
            storm["me_idle"].append(run_oha(f"{label}-probe-me-idle-r{r}", argv["me"]))
            storm_argv = oha(f"{auth_url}/login", 64, 2 * SECONDS + 2, "POST",
                             {"email": "reader@bench.example", "password": PASSWORD})
            storm_proc = subprocess.Popen(storm_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            children.append(storm_proc)
            time.sleep(1)
            storm["storm"].append(probe_with_waits(f"{label}-probe-storm-r{r}", argv["task"]))
            storm["me_storm"].append(run_oha(f"{label}-probe-me-storm-r{r}", argv["me"]))
            out, _ = storm_proc.communicate(timeout=SECONDS * 4 + 60)
            children.remove(storm_proc)
            storm["storm"][-1]["storm_login"] = parse_oha(out)
        return storm

    report["storm"] = {}
    if ONLY.search("task-read p99 during a login storm"):
        report["storm"]["unlimited"] = login_storm("storm")
        try:
            limit = CpuLimit(f"todo-bench-auth-{os.getpid()}", float(AUTH_CPU_LIMIT)) if AUTH_CPU_LIMIT else None
        except (OSError, RuntimeError) as e:
            log(f"login storm under a CPU limit skipped: {e}")
            report["storm_limit_skipped"] = str(e)
            limit = None
        if limit:
            try:
                auth = services["auth"] = restart_service(auth, "auth-service", auth_env, auth_admin, limit)
                report["storm"][f"limit {AUTH_CPU_LIMIT}"] = {
                    **login_storm(f"storm-limit{AUTH_CPU_LIMIT}"), "cores": limit.cores}
            finally:
                auth = services["auth"] = restart_service(auth, "auth-service", auth_env, auth_admin)
                limit.remove()

    # ---- overload answers carry Retry-After: a burst of logins, every 503/429 inspected
    log("login burst: every 503/429 must carry Retry-After")
    report["retry_after"] = login_burst(auth_url, 96)

    report["binary_bytes"] = {n: (ROOT / "target" / "release" / n).stat().st_size
                              for n in ("auth-service", "task-service")}

    # ---- task-service settings side by side: the single read (and the create) with
    # task-service restarted under each setting (pool sizes, log level, coalescing, ...), the
    # settings alternating within each round. After the footprint, which is of the defaults.
    create_body = {"title": "Buy milk", "description": "two litres"}
    measured = {
        "variants": ("GET /api/v1/tasks/{id}", "task-service settings",
                     ENV.get("BENCH_TASK_VARIANTS", DEFAULT_TASK_VARIANTS),
                     lambda seconds: oha(read_url(), 32, seconds, token=tokens["reader"], regex=True)),
        "create_variants": ("POST /api/v1/tasks", "create settings",
                            ENV.get("BENCH_CREATE_VARIANTS", DEFAULT_CREATE_VARIANTS),
                            lambda seconds: oha(task_url, 32, seconds, "POST", create_body,
                                                token=tokens["writer"])),
        "list_variants": ("GET /api/v1/tasks (100 tasks)", "list settings",
                          ENV.get("BENCH_LIST_VARIANTS", DEFAULT_LIST_VARIANTS),
                          lambda seconds: oha(task_url, 32, seconds, token=tokens["reader"])),
    }
    for key_in_report, (request, selector, variants, load) in measured.items():
        variants = variants.split()
        report[key_in_report] = {}
        for r in range(ROUNDS if ONLY.search(selector) else 0):
            for variant in variants if r % 2 == 0 else list(reversed(variants)):
                key, _, value = variant.partition("=")
                task = services["task"] = restart_service(task, "task-service", {**task_env, key: value}, task_admin)
                # opens the pool's connections before the measured run
                subprocess.run(load(1), capture_output=True)
                log(f"round {r + 1}: {request} c=32, task-service with {variant}")
                report[key_in_report].setdefault(variant, []).append(
                    run_oha(f"{slug(selector)}-{slug(variant)}-r{r}", load(SECONDS)))

    report["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    report["rows"] = {f"{k[0]}|{k[1]}": v for k, v in rows.items()}
    (OUT / "report.json").write_text(json.dumps(report, indent=1, default=str))
    text = render(report, rows)
    (OUT / "report.md").write_text(text)
    print(text)
    return 0


def cpu_list(spec: str) -> set[int]:
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def hashing_threads(pid: int) -> list[str]:
    """name, scheduling policy, nice value and slice of auth-service's bcrypt threads."""
    policies = {0: "SCHED_OTHER", 3: "SCHED_BATCH", 5: "SCHED_IDLE"}
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        if name.startswith("bcrypt"):
            f = raw[raw.rindex(")") + 2:].split()
            found.append(f"{name}: {policies.get(int(f[38]), f[38])}, nice {f[16]}{slice_of(pid, tid)}")
    return sorted(found)


def runqueue_wait_ns(pids: list[int]) -> int:
    """Time the threads of `pids` spent runnable but waiting for a CPU (the second field of
    /proc/<pid>/task/<tid>/schedstat), summed."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total


def slice_of(pid: int, tid: str) -> str:
    """", slice 0.1 ms": the EEVDF slice the kernel shows for a thread (`se.slice`), if it does."""
    try:
        for line in Path(f"/proc/{pid}/task/{tid}/sched").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "se.slice":
                return f", slice {int(value) / 1e6:g} ms"
    except (OSError, ValueError):
        pass
    return ""


def id_range_regex(lo: int, hi: int) -> str:
    if (lo, hi) == (1, 100):
        return "([1-9][0-9]?|100)"
    return "(" + "|".join(str(i) for i in range(lo, hi + 1)) + ")"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_refresh(auth_url, user_sub, c, r, cpu, loadgen, rate_guess) -> dict:
    """A pool of never-used refresh tokens, one session each, inserted in SQL (the value is any
    string; the table holds its SHA-256), walked in order by wrk so that none is sent twice."""
    pool = int(max(20_000, rate_guess * SECONDS * 2))
    tag = f"r{r}c{c}-{os.urandom(4).hex()}"
    token_file = OUT / f"refresh-{tag}.tokens"
    psql(f"""CREATE TEMP TABLE pool AS
               SELECT gen_random_uuid() AS sid,
                      'bench-{tag}-' || g || '-' || md5(random()::text) AS token
               FROM generate_series(1, {pool}) g;
             INSERT INTO auth.sessions (id, user_id, access_expires_at)
               SELECT sid, '{user_sub}', now() + interval '1 day' FROM pool;
             INSERT INTO auth.refresh_tokens (token_hash, session_id, expires_at)
               SELECT sha256(convert_to(token, 'UTF8')), sid, now() + interval '30 days' FROM pool;
             \\copy (SELECT token FROM pool) TO '{token_file}'""")
    if WRK:
        out_json = OUT / f"refresh-{tag}.json"
        argv = pinned(LOAD_CPU, [WRK, "-t", "1", "-c", str(c), "-d", f"{SECONDS}s",
                                 "--timeout", TIMEOUT, "-s", str(Path(__file__).with_name("refresh.lua")),
                                 f"{auth_url}/refresh", "--", str(token_file), str(out_json), "1"])
        c0 = loadgen.now()
        cpu.start()
        proc = subprocess.run(argv, capture_output=True, timeout=SECONDS * 3 + 60)
        split = cpu.stop(loadgen.now() - c0)
        if proc.returncode != 0 or not out_json.exists():
            raise RuntimeError(f"wrk failed: {proc.stderr.decode()[-500:]}")
        res = parse_wrk(out_json)
        res["pool"] = pool
    else:
        # oha picks body lines at random: some tokens repeat (401s, visible as "other").
        bodies = OUT / f"refresh-{tag}.bodies"
        bodies.write_text("".join(f'{{"refresh_token":"{t}"}}\n'
                                  for t in token_file.read_text().split()))
        argv = pinned(LOAD_CPU, [OHA, "-z", f"{SECONDS}s", "-c", str(c), "--no-tui",
                                 "--output-format", "json", "-t", TIMEOUT,
                                 "--wait-ongoing-requests-after-deadline", "-m", "POST",
                                 "-T", "application/json", "-Z", str(bodies), f"{auth_url}/refresh"])
        c0 = loadgen.now()
        cpu.start()
        proc = subprocess.run(argv, capture_output=True, timeout=SECONDS * 3 + 60)
        split = cpu.stop(loadgen.now() - c0)
        res = parse_oha(proc.stdout)
        res["pool"] = pool
    res["cpu"] = split
    token_file.unlink(missing_ok=True)
    return res


def sql_as_pgbench(path: Path, variables: list) -> str:
    """A statement of task-service's `sql/` as a pgbench script: `$1`, `$2`, … become the
    pgbench variables given (bound as parameters under `-M prepared`, as task-service binds)."""
    sql = path.read_text().strip()
    for n in range(len(variables), 0, -1):
        sql = sql.replace(f"${n}", variables[n - 1])
    return " ".join(sql.split()) + ";\n"


# Each floor's endpoint: the pair run again at one fixed rate, for the database's CPU alone.
ENDPOINT_OF_FLOOR = {"pgbench -S -M prepared": "GET /api/v1/tasks/{id}",
                     "pgbench, the list query": "GET /api/v1/tasks (100 tasks)",
                     "pgbench, the insert": "POST /api/v1/tasks"}


def at_fixed_rate(row: str) -> str:
    return f"{row}, at a fixed rate"


def run_pgbench(cpu, loadgen, r, name="pgbench -S -M prepared", floor=(None, {}), rate=None) -> dict:
    """pgbench at full speed, or throttled to `rate` statements a second (`-R`)."""
    script, variables = floor
    what = ["-S"]
    if script is not None:
        script_file = OUT / f"{slug(name)}.sql"
        script_file.write_text(script)
        what = ["-f", str(script_file)] + [f"-D{k}={v}" for k, v in variables.items()]
    throttle = ["-R", f"{rate:.0f}"] if rate else []
    argv = pinned(LOAD_CPU, [PGBENCH, *what, *throttle, "-M", "prepared", "-c", "32", "-j", "1",
                             "-T", str(SECONDS), "-n", DB_URL])
    c0 = loadgen.now()
    cpu.start()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=SECONDS * 3 + 60)
    split = cpu.stop(loadgen.now() - c0)
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench failed: {proc.stderr[-500:]}")
    (OUT / f"{slug(name)}-r{r}.txt").write_text(proc.stdout)
    tps = float(re.search(r"tps = ([0-9.]+) \(without initial", proc.stdout).group(1))
    lat = re.search(r"latency average = ([0-9.]+) ms", proc.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", proc.stdout)
    processed = re.search(r"number of transactions actually processed: (\d+)", proc.stdout)
    return {"transactions": int(processed.group(1)), "rps": tps, "p50_ms": None, "p99_ms": None, "avg_ms": float(lat.group(1)) if lat else None,
            "n": None, "e503": 0, "e429": 0, "eother": int(failed.group(1)) if failed else 0,
            "timeouts": 0, "conn_errors": 0, "cpu": split}


def login_burst(auth_url: str, n: int) -> dict:
    if PIN:
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    body = {"email": "reader@bench.example", "password": PASSWORD}

    def one(_):
        try:
            status, headers, _ = http("POST", f"{auth_url}/login", body, timeout=30)
        except Exception as e:  # noqa: BLE001 - counted, not raised
            return ("error", type(e).__name__)
        return (status, {k.lower(): v for k, v in headers.items()}.get("retry-after"))

    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    os.sched_setaffinity(0, set(range(CORES)))
    summary: dict = {}
    for status, retry in results:
        key = str(status)
        if status in (503, 429):
            key += " with Retry-After" if retry else " WITHOUT Retry-After"
        summary[key] = summary.get(key, 0) + 1
    return summary


# ---------------------------------------------------------------- the table

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=1):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def pg_us(run: dict) -> float | None:
    """PostgreSQL's CPU per answered request (or statement) of a run, in microseconds."""
    answered = run["rps"] * run["cpu"]["wall"]
    return run["cpu"]["pg"] / answered * 1e6 if answered else None


def render(report: dict, rows: dict) -> str:
    s = report["settings"]
    lines = []
    pin = (f"services on CPU {s['service_cpu']}, load generator on CPU {s['load_cpu']}, "
           f"PostgreSQL unpinned") if s["pinned"] else "nothing pinned"
    lines.append(f"{s['rounds']} alternating rounds of {s['seconds']} s per row, median shown; "
                 f"{s['cores']} cores; {pin}; load average at start {' '.join(s['loadavg_start'])}, "
                 f"at end {' '.join(report['loadavg_end'])}; service settings beyond the defaults: "
                 f"{s['service_env'] or 'none'}; services in {s.get('sessions', 'own')} sessions; "
                 f"rows \"at a fixed rate\" at {s.get('equal_rate_fraction', 0.7):.0%} of the endpoint's rate in the same round" + (f"; rows matching {s['only']!r} only" if s["only"] else "") + ".")
    lines.append("")
    lines.append("| endpoint | c | req/s (2xx) | p50 ms | p99 ms | 503 | 429 | other non-2xx | timeouts | conn errors "
                 "| CPU s: auth | task | postgres | load gen | other procs | wall s |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (name, c), runs in rows.items():
        cpu = {k: med([r["cpu"][k] for r in runs]) for k in ("auth", "task", "pg", "load", "other", "wall")}
        lines.append(
            f"| {name} | {c} | {fmt(med([r['rps'] for r in runs]), 0)} | {fmt(med([r['p50_ms'] for r in runs]), 2)} "
            f"| {fmt(med([r['p99_ms'] for r in runs]), 2)} | {sum(r['e503'] for r in runs)} | {sum(r['e429'] for r in runs)} "
            f"| {sum(r['eother'] for r in runs)} | {sum(r['timeouts'] for r in runs)} | {sum(r['conn_errors'] for r in runs)} "
            f"| {fmt(cpu['auth'])} | {fmt(cpu['task'])} | {fmt(cpu['pg'])} | {fmt(cpu['load'])} | {fmt(cpu['other'])} | {fmt(cpu['wall'])} |")
    lines.append("")
    lines.append("Errors are totals over all rounds; CPU seconds are medians per run (postgres = the whole "
                 "cluster: postmaster, live backends and reaped ones; other procs = machine busy time "
                 "not accounted to these processes).")
    def median_rps_c32(name):
        return med([r["rps"] for r in rows.get((name, 32), [])])

    pg = median_rps_c32("pgbench -S -M prepared")
    bound = report["bcrypt"]["bound_per_s"]
    lines.append("")
    lines.append("## Limits and ratios (c = 32 rows)")
    lines.append("")
    lines.append(f"- pgbench -S -M prepared -c 32 (scale {PG_SCALE}): **{fmt(pg, 0)} selects/s**")
    b = report["bcrypt"]
    lines.append(f"- bcrypt bound: {b['service_cores']} core(s) the services may use ÷ {b['hash_ms']:.1f} ms per "
                 f"cost-{s['bcrypt_cost']} verification = **{bound:.2f} logins/s** (all {s['cores']} cores: "
                 f"{b['machine_bound_per_s']:.2f}/s); hashing threads: {'; '.join(report['hashing_threads'])}")
    lines.append("")
    lines.append("| ratio | value | target |")
    lines.append("|---|---:|---:|")

    def ratio(name, c, denom):
        runs = rows.get((name, c))
        if not runs or not denom:
            return None
        return med([r["rps"] for r in runs]) / denom

    # Each endpoint against the database doing its work (the floors), per round (the rounds
    # alternate, so round i of the endpoint and of its floor met the same machine), and the
    # median of those ratios.
    for name, floor, target in (("GET /api/v1/tasks/{id}", "pgbench -S -M prepared", "≥ 1.0"),
                                ("GET /api/v1/tasks (100 tasks)", "pgbench, the list query", "≥ 0.8 in every round"),
                                ("POST /api/v1/tasks", "pgbench, the insert", "≥ 0.7")):
        ours, theirs = rows.get((name, 32), []), rows.get((floor, 32), [])
        per_round = [a["rps"] / b["rps"] for a, b in zip(ours, theirs) if b["rps"]]
        if not per_round:
            continue
        each = " / ".join(f"{x:.3f}" for x in per_round)
        lines.append(f"| {name} ÷ {floor} (each round: {each}) | {fmt(med(per_round), 3)} | {target} |")
    if "bulk_other_before_round" in report:
        lines.append(f"| (another user inserted {BULK_OTHER} newer tasks, then ANALYZE, before round "
                     f"{report['bulk_other_before_round']}) | | |")
    # The same pairs by the database's CPU alone: what a request costs PostgreSQL against what
    # the floor's statement costs it. On this machine the service, the database and the load
    # generator share the cores, so the ratios above also charge the service's own CPU against
    # the database's; deployed, the service scales out on cores of its own and the database's
    # work per request is what bounds the rate (≥ 1.0: no more database work than the floor).
    # At full speed the endpoint saturates the machine and its floor does not, and PostgreSQL's
    # CPU per statement depends on the rate: the pairs run again at one fixed rate are the fair
    # comparison.
    for floor, name in [(f, n) for f, n in ENDPOINT_OF_FLOOR.items()] + \
            [(at_fixed_rate(f), at_fixed_rate(n)) for f, n in ENDPOINT_OF_FLOOR.items()]:
        ours, theirs = rows.get((name, 32), []), rows.get((floor, 32), [])
        per_round = [pg_us(b) / pg_us(a) for a, b in zip(ours, theirs) if pg_us(a) and pg_us(b)]
        if not per_round:
            continue
        lines.append(f"| database CPU per statement of {floor} ÷ per {name} "
                     f"({fmt(med([pg_us(b) for b in theirs]), 1)} µs ÷ {fmt(med([pg_us(a) for a in ours]), 1)} µs; "
                     f"each round: {' / '.join(f'{x:.2f}' for x in per_round)}) | {fmt(med(per_round), 2)} | ≥ 1.0 |")
    for c in CONCURRENCY:
        lines.append(f"| login c={c} ÷ bcrypt bound | {fmt(ratio('POST /api/v1/auth/login', c, bound), 2)} | ≥ 0.9 |")
    fit = [k for k in rows if k[0].startswith("POST /api/v1/auth/login (within")]
    for name, c in fit:
        lines.append(f"| login c={c} (fits the hashing queue) ÷ bcrypt bound | {fmt(ratio(name, c, bound), 2)} | ≥ 0.9 |")
    small = med([r["p50_ms"] for r in report["list_small"]]) if report["list_small"] else None
    bigp50 = med([r["p50_ms"] for r in rows.get(("GET /api/v1/tasks (1M-row table)", 32), [])])
    lines.append(f"| list p50, 1M-row table ÷ 100-row table (c=32: {fmt(bigp50, 2)} ms ÷ {fmt(small, 2)} ms) "
                 f"| {fmt(bigp50 / small if small and bigp50 else None, 2)} | ≤ 1.5 |")
    for name, storm in report["storm"].items():
        # Under a limit the bound is what its hashing threads can do: one per whole core of
        # the quota (available_parallelism rounds the quota down).
        cores = min(storm.get("cores", report["bcrypt"]["service_cores"]), len(storm["hashing_threads"]))
        for what, key in (("task-read", ""), ("auth-service GET /me", "me_")):
            idle = med([r["p99_ms"] for r in storm[key + "idle"]])
            during = med([r["p99_ms"] for r in storm[key + "storm"]])
            lines.append(f"| auth-service {name}: {what} p99 during a login storm ÷ idle ({fmt(during, 2)} ms "
                         f"÷ {fmt(idle, 2)} ms, probe at a fixed {ENV.get('BENCH_PROBE_QPS', '200')} req/s, storm = 64 concurrent logins) "
                         f"| {fmt(during / idle if idle and during else None, 2)} | ≤ 2 |")
        logins = med([r["storm_login"]["rps"] for r in storm["storm"]])
        bound = cores / (report["bcrypt"]["hash_ms"] / 1000)
        lines.append(f"| auth-service {name}: logins/s during that storm ÷ bcrypt bound on its {fmt(cores, 1)} "
                     f"core(s) ({fmt(logins, 2)} ÷ {fmt(bound, 2)}) | {fmt(logins / bound if bound else None, 2)} "
                     f"| ≥ 0.9 |")
    for key_in_report, request, floor in (("variants", "GET /api/v1/tasks/{id}", "pgbench -S -M prepared"),
                                          ("create_variants", "POST /api/v1/tasks", "pgbench, the insert"),
                                          ("list_variants", "GET /api/v1/tasks (100 tasks)",
                                           "pgbench, the list query")):
        if not report.get(key_in_report):
            continue
        first = next(iter(report[key_in_report]))
        base = med([r["rps"] for r in report[key_in_report][first]])
        limit = median_rps_c32(floor)
        lines.append("")
        lines.append(f"## task-service settings side by side: {request}, c=32, "
                     "task-service restarted per setting, settings alternating")
        lines.append("")
        lines.append(f"| setting | req/s (2xx) | p50 ms | p99 ms | ÷ {first} | ÷ {floor} | errors "
                     "| CPU s: task | postgres | load gen |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for variant, runs in report[key_in_report].items():
            rps = med([r["rps"] for r in runs])
            cpu = {k: med([r["cpu"][k] for r in runs]) for k in ("task", "pg", "load")}
            errors = sum(r["e503"] + r["e429"] + r["eother"] + r["timeouts"] + r["conn_errors"] for r in runs)
            lines.append(f"| `{variant}` | {fmt(rps, 0)} | {fmt(med([r['p50_ms'] for r in runs]), 2)} "
                         f"| {fmt(med([r['p99_ms'] for r in runs]), 2)} | {fmt(rps / base if base else None, 2)} "
                         f"| {fmt(rps / limit if limit else None, 3)} | {errors} | {fmt(cpu['task'])} | {fmt(cpu['pg'])} "
                         f"| {fmt(cpu['load'])} |")
    if report.get("storm_limit_skipped"):
        lines.append("")
        lines.append(f"Login storm under a CPU limit skipped: {report['storm_limit_skipped']}")
    for name, storm in report["storm"].items():
        lines.append("")
        lines.append(f"Login storm, auth-service {name} (hashing threads: {'; '.join(storm['hashing_threads'])}), "
                     "per round: " + "; ".join(
                         f"{fmt(r['storm_login']['rps'], 1)} logins/s, {r['storm_login']['e503']}×503, "
                         f"CPU s auth {fmt(r['cpu']['auth'])}, task {fmt(r['cpu']['task'])}, "
                         f"postgres {fmt(r['cpu']['pg'])}" for r in storm["storm"]))
        waits = [(i.get("runqueue_wait_us_per_request"), s.get("runqueue_wait_us_per_request"))
                 for i, s in zip(storm["idle"], storm["storm"])]
        if waits and all(i and s for i, s in waits):
            lines.append("")
            lines.append(f"Run-queue wait per task-read probe request, auth-service {name}, idle → storm "
                         "(µs waiting for a CPU, all threads of the process; median of the rounds): " + ", ".join(
                             f"{who} {fmt(med([i[who] for i, _ in waits]), 1)} → {fmt(med([s[who] for _, s in waits]), 1)}"
                             for who in waits[0][0]))
    lines.append("")
    lines.append(f"Login burst of 96 at once (overload answers): {report['retry_after']}")
    lines.append("")
    lines.append("## Footprint")
    lines.append("")
    lines.append("| | auth-service | task-service |")
    lines.append("|---|---:|---:|")
    b = report["binary_bytes"]
    lines.append(f"| release binary | {b['auth-service'] / 2**20:.1f} MiB | {b['task-service'] / 2**20:.1f} MiB |")
    for key, label in (("rss_idle_kib", "RSS idle (after start and seeding)"),
                       ("rss_after_load_kib", "RSS after the load"),
                       ("rss_peak_kib", "RSS peak (VmHWM)")):
        v = report[key]
        lines.append(f"| {label} | {v['auth-service'] / 1024:.1f} MiB | {v['task-service'] / 1024:.1f} MiB |")
    st = report["startup_s"]
    lines.append(f"| start-up to /readyz 200, empty database (runs migrations) | {st['auth-service'][0] * 1000:.0f} ms "
                 f"| {st['task-service'][0] * 1000:.0f} ms |")
    lines.append(f"| start-up to /readyz 200, migrated database | {st['auth-service'][1] * 1000:.0f} ms "
                 f"| {st['task-service'][1] * 1000:.0f} ms |")
    lines.append("")
    lines.append(f"## The list query on the {report['tasks_rows']:,}-row table (generic plan, as the prepared statement runs it)")
    lines.append("")
    lines.append("```")
    lines.append(report["explain"])
    lines.append("```")
    lines.append("")
    refresh = [r for (n, _), runs in rows.items() if n.endswith("refresh") for r in runs]
    if refresh:
        lines.append("Refresh: each run gets a fresh pool of single-use refresh tokens (one session each, "
                     f"inserted in SQL); {'wrk walks the pool in order, never sending a token twice' if WRK else 'oha draws pool lines at random (repeats are 401s)'}; "
                     f"pool sizes {sorted({r['pool'] for r in refresh})}, "
                     f"requests sent past the end of a pool: {sum(r.get('exhausted', 0) for r in refresh)}.")
    return "\n".join(lines) + "\n"


def cleanup(*_):
    for proc in list(children):
        try:
            stop(proc)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    children.clear()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    finally:
        cleanup()
