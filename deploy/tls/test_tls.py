"""Both services against a PostgreSQL that accepts only TLS (run.sh starts it): what works, and
what stops at start-up with one line naming the cause.

Every URL carries a password (the server's trust authentication ignores it), so each test also
checks that no output of the binaries ever shows it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

BIN_DIR = Path(os.environ["TLS_BIN_DIR"])
PORT = os.environ["TLS_PG_PORT"]
SOCKET = os.environ["TLS_PG_SOCKET"]
PSQL = os.environ["TLS_PSQL"]
CA = os.environ["TLS_CA"]
OTHER_CA = os.environ["TLS_OTHER_CA"]
PASSWORD = "s3cret-in-the-url"
JWT_SECRET = "tls-test-" + "k" * 40
SERVICES = ("auth-service", "task-service")


def psql(sql: str, database: str = "postgres") -> str:
    """Runs `sql` over the Unix socket (not subject to the hostnossl rule)."""
    out = subprocess.run(
        [PSQL, "-h", SOCKET, "-p", PORT, "-U", "postgres", "-d", database,
         "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


@pytest.fixture
def database():
    name = f"tls_{secrets.token_hex(6)}"
    psql(f"CREATE DATABASE {name}")
    yield name
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def url(host: str, database: str, query: str = "") -> str:
    return f"postgres://postgres:{PASSWORD}@{host}:{PORT}/{database}" + (f"?{query}" if query else "")


def base_env(database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    # RUST_BACKTRACE would add anyhow's backtrace under the error line; production leaves it unset.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "DATABASE_", "JWT_", "RUST_LOG", "RUST_BACKTRACE", "RUST_LIB_BACKTRACE"))}
    env.update(
        DATABASE_URL=database_url,
        JWT_SECRET=JWT_SECRET,
        HTTP_ADDR="127.0.0.1:0",
        ADMIN_ADDR="127.0.0.1:0",
        LOG_FORMAT="json",
        RUST_LOG="info",
        BCRYPT_COST="10",
        SHUTDOWN_DELAY_SECONDS="0",
        REVOCATION_POLL_SECONDS="1",
        # As the chart runs them: the migrate command has already run.
        MIGRATE_ON_START="false",
    )
    env.update(extra or {})
    return env


def run(binary: str, command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`binary command` to its end (a hang guard only: each takes well under a second)."""
    return subprocess.run([str(BIN_DIR / binary), command], env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60)


def wait_until(check, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextmanager
def serving(binary: str, env: dict[str, str], logs: Path):
    """`binary serve` until the block ends; yields (api, admin) once /readyz says ready."""
    stdout, stderr = logs / f"{binary}.out", logs / f"{binary}.err"
    process = subprocess.Popen([str(BIN_DIR / binary), "serve"], env=env, stdin=subprocess.DEVNULL,
                               stdout=stdout.open("wb"), stderr=stderr.open("wb"))
    try:
        def listening():
            if process.poll() is not None:
                raise AssertionError(f"{binary} exited with {process.returncode}: "
                                     + stderr.read_text() + stdout.read_text()[-2000:])
            for line in stdout.read_text(errors="replace").splitlines():
                if f'"{binary} listening"' in line:
                    return json.loads(line)
            return None

        line = wait_until(listening, f"{binary} to listen")
        api, admin = line["api"], line["admin"]
        wait_until(lambda: ready(admin), f"{binary} to be ready on /readyz")
        yield api, admin
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        output = stdout.read_text(errors="replace") + stderr.read_text(errors="replace")
        assert PASSWORD not in output, f"{binary} printed the database password"


def ready(admin: str) -> bool:
    try:
        return requests.get(f"http://{admin}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def tls_sessions(database: str) -> tuple[int, int]:
    """(sessions with TLS, sessions without) on `database`, as the server sees them."""
    row = psql(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) "
        "FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
        f"WHERE a.datname = '{database}' AND a.client_addr IS NOT NULL"
    )
    with_tls, without = row.split("|")
    return int(with_tls), int(without)


def migrate_serve_and_use(env: dict[str, str], database: str, logs: Path) -> None:
    """Both services: migrate, serve until ready, then register, log in, create and read a task."""
    for binary in SERVICES:
        done = run(binary, "migrate", env)
        assert done.returncode == 0, done.stderr
        assert PASSWORD not in done.stdout + done.stderr
    with serving("auth-service", env, logs) as (auth_api, auth_admin):
        task_env = env | {"AUTH_ADMIN_URL": f"http://{auth_admin}"}
        with serving("task-service", task_env, logs) as (task_api, _):
            email, password = f"{secrets.token_hex(4)}@example.com", "correct horse battery"
            registered = requests.post(f"http://{auth_api}/api/v1/auth/register",
                                       json={"email": email, "password": password}, timeout=10)
            assert registered.status_code == 201, registered.text
            login = requests.post(f"http://{auth_api}/api/v1/auth/login",
                                  json={"email": email, "password": password}, timeout=10)
            assert login.status_code == 200, login.text
            bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
            created = requests.post(f"http://{task_api}/api/v1/tasks", headers=bearer,
                                    json={"title": "over TLS"}, timeout=10)
            assert created.status_code == 201, created.text
            read = requests.get(f"http://{task_api}/api/v1/tasks/{created.json()['id']}",
                                headers=bearer, timeout=10)
            assert read.status_code == 200, read.text
            assert read.json()["title"] == "over TLS"
            with_tls, without = tls_sessions(database)
            assert with_tls > 0 and without == 0, (with_tls, without)


@pytest.mark.parametrize(
    "host, query, extra",
    [
        ("localhost", f"sslmode=verify-full&sslrootcert={CA}", {}),
        ("127.0.0.1", f"sslmode=verify-full&sslrootcert={CA}", {}),
        # As the chart's databaseCA sets them: the URL names neither.
        ("localhost", "", {"PGSSLROOTCERT": CA, "PGSSLMODE": "verify-full"}),
        ("127.0.0.1", "sslmode=require", {}),
    ],
    ids=["verify-full-localhost", "verify-full-ip", "verify-full-from-env", "require"],
)
def test_both_services_migrate_serve_and_answer(database, tmp_path, host, query, extra):
    migrate_serve_and_use(base_env(url(host, database, query), extra), database, tmp_path)


# (host, query, what the one line must say)
REFUSED = {
    "wrong-ca": ("localhost", f"sslmode=verify-full&sslrootcert={OTHER_CA}",
                 "TLS certificate is not signed by a CA this service trusts; check that sslrootcert"),
    # The server listens on 127.0.0.2 too, but its certificate names only localhost and 127.0.0.1.
    "wrong-host-name": ("127.0.0.2", f"sslmode=verify-full&sslrootcert={CA}",
                        "TLS certificate does not name the host `127.0.0.2`"),
    "plaintext": ("127.0.0.1", "sslmode=disable",
                  "the server accepts only TLS connections; set sslmode=verify-full"),
}


@pytest.mark.parametrize("binary", SERVICES)
@pytest.mark.parametrize("command", ["migrate", "serve"])
@pytest.mark.parametrize("case", REFUSED)
def test_a_connection_that_cannot_work_stops_the_start_with_one_line(database, case, command, binary):
    host, query, expected = REFUSED[case]
    env = base_env(url(host, database, query), {"AUTH_ADMIN_URL": "http://127.0.0.1:9"})
    done = run(binary, command, env)
    assert done.returncode == 1, (done.returncode, done.stdout[-2000:], done.stderr)
    error = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(error) == 1, done.stderr
    print(error[0])  # shown with `pytest -s`
    assert error[0].startswith(f"Error: cannot connect to the database at {host}:{PORT} "
                               f"(database `{database}`, user `postgres`): "), error[0]
    assert expected in error[0], error[0]
    assert PASSWORD not in done.stdout + done.stderr
    if command == "serve":
        # It never started listening.
        assert "listening" not in done.stdout
