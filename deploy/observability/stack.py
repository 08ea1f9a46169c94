"""Starting the real binaries for the observability tests: a database of their own, both
services on loopback ports they choose themselves (port 0, read back from the "listening" log
line), and optionally an OTLP receiver they export to. Their stdout and stderr go to files.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from otlp_receiver import GrpcReceiver, HttpReceiver, SpanStore

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("OBS_BIN_DIR", REPO / "target" / "debug"))
PG_URL = os.environ.get("OBS_PG_URL", "postgres://postgres@127.0.0.1:5432")
# One key for both services, as in production (≥ 32 bytes).
JWT_SECRET = "obs-test-" + "k" * 40


def free_port() -> int:
    """A loopback port free right now (for tools that cannot take port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(sql: str) -> None:
    subprocess.run(
        ["psql", f"{PG_URL}/postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql],
        check=True,
        capture_output=True,
    )


def query_one(database: str, sql: str) -> str:
    out = subprocess.run(
        ["psql", f"{PG_URL}/{database}", "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def wait_until(check, timeout: float, what: str, interval: float = 0.1):
    """Polls `check` until it returns something truthy; fails with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    stdout: Path
    stderr: Path
    api: str = ""
    admin: str = ""

    def log_lines(self) -> list[str]:
        return self.stdout.read_text(errors="replace").splitlines() + self.stderr.read_text(
            errors="replace"
        ).splitlines()

    def json_logs(self) -> list[dict]:
        lines = []
        for line in self.stdout.read_text(errors="replace").splitlines():
            if line.strip():
                lines.append(json.loads(line))
        return lines

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@dataclass
class Stack:
    """auth-service + task-service on one fresh database, exporting to `protocol` (or not),
    logging in `log_format` (`json` or `text`)."""

    workdir: Path
    protocol: str | None
    log_format: str = "json"
    database: str = field(default_factory=lambda: f"obs_{secrets.token_hex(6)}")
    receiver: GrpcReceiver | HttpReceiver | None = None
    spans: SpanStore | None = None
    auth: Service | None = None
    task: Service | None = None

    def start(self) -> "Stack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        psql(f"CREATE DATABASE {self.database}")
        if self.protocol is not None:
            self.spans = SpanStore(self.workdir / "spans.jsonl")
            port = free_port()
            if self.protocol == "grpc":
                self.receiver = GrpcReceiver(self.spans, port)
            else:
                self.receiver = HttpReceiver(self.spans, port)
            self.receiver.start()
        self.auth = self._spawn("auth-service", {})
        self.task = self._spawn("task-service", {"AUTH_ADMIN_URL": f"http://{self.auth.admin}"})
        return self

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "RUST_LOG", "DATABASE_", "JWT_", "BCRYPT_"))
        }
        env.update(
            DATABASE_URL=f"{PG_URL}/{self.database}",
            JWT_SECRET=JWT_SECRET,
            HTTP_ADDR="127.0.0.1:0",
            ADMIN_ADDR="127.0.0.1:0",
            LOG_FORMAT=self.log_format,
            # Debug everywhere: the secrets check must see every line the services can write.
            RUST_LOG="debug",
            BCRYPT_COST="10",
            SHUTDOWN_DELAY_SECONDS="0",
            REVOCATION_POLL_SECONDS="1",
        )
        if self.protocol is not None:
            env.update(
                OTEL_EXPORTER_OTLP_ENDPOINT=self.receiver.endpoint,
                OTEL_EXPORTER_OTLP_PROTOCOL=self.protocol,
                # Export every 200 ms instead of 5 s, so the tests wait less.
                OTEL_BSP_SCHEDULE_DELAY="200",
            )
        return env

    def _spawn(self, name: str, extra: dict[str, str]) -> Service:
        stdout = self.workdir / f"{name}.stdout.log"
        stderr = self.workdir / f"{name}.stderr.log"
        env = self._env() | extra
        process = subprocess.Popen(
            [str(BIN_DIR / name), "serve"],
            env=env,
            stdout=stdout.open("wb"),
            stderr=stderr.open("wb"),
            stdin=subprocess.DEVNULL,
        )
        service = Service(name, process, stdout, stderr)

        def listening():
            if process.poll() is not None:
                raise AssertionError(
                    f"{name} exited with {process.returncode}:\n"
                    + "\n".join(service.log_lines()[-20:])
                )
            for line in stdout.read_text(errors="replace").splitlines():
                if f"{name} listening" in line:
                    return _listening_addresses(line)
            return None

        service.api, service.admin = wait_until(listening, 30, f"{name} to listen")
        wait_until(
            lambda: _get_ok(f"http://{service.admin}/readyz"), 30, f"{name} to be ready"
        )
        return service

    def stop(self) -> None:
        for service in (self.task, self.auth):
            if service is not None:
                service.stop()
        if self.receiver is not None:
            self.receiver.stop()
        try:
            psql(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
        except subprocess.CalledProcessError:
            pass

    def wait_for_spans(self, check, timeout: float = 15, what: str = "spans"):
        """Polls the received spans until `check(spans)` returns something truthy."""
        return wait_until(lambda: check(self.spans.spans()), timeout, what, interval=0.1)


def _listening_addresses(line: str) -> tuple[str, str]:
    """The API and admin addresses of a "listening" line, JSON or text (`api=… admin=…`)."""
    if line.startswith("{"):
        event = json.loads(line)
        return event["api"], event["admin"]
    fields = dict(re.findall(r"\b(api|admin)=(\S+)", line))
    return fields["api"], fields["admin"]


def _get_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
