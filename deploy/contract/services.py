"""Both real services on loopback, on a fresh database of their own: the ports they chose
themselves (port 0, read back from their "listening" log line), their stdout and stderr in files."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("CONTRACT_BIN_DIR", REPO / "target" / "debug"))
PG_URL = os.environ.get("CONTRACT_PG_URL", "postgres://postgres@127.0.0.1:5432").removesuffix(
    "/postgres"
)
JWT_SECRET = "contract-test-" + "k" * 40


def psql(sql: str) -> None:
    subprocess.run(
        ["psql", f"{PG_URL}/postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql],
        check=True,
        capture_output=True,
    )


def wait_until(check, timeout: float, what: str):
    """Polls `check` until it returns something truthy; fails with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
    return result


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    log: Path
    api: str = ""
    admin: str = ""

    @property
    def base_url(self) -> str:
        return f"http://{self.api}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Services:
    workdir: Path
    database: str = field(default_factory=lambda: f"contract_{secrets.token_hex(6)}")
    auth: Service | None = None
    task: Service | None = None

    def start(self) -> "Services":
        psql(f"CREATE DATABASE {self.database}")
        self.auth = self._spawn("auth-service", {})
        self.task = self._spawn("task-service", {"AUTH_ADMIN_URL": f"http://{self.auth.admin}"})
        return self

    def stop(self) -> None:
        for service in (self.task, self.auth):
            if service is not None:
                service.stop()
        try:
            psql(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
        except subprocess.CalledProcessError:
            pass

    def _spawn(self, name: str, extra: dict[str, str]) -> Service:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "RUST_LOG", "DATABASE_", "JWT_", "BCRYPT_"))
        }
        env |= {
            "DATABASE_URL": f"{PG_URL}/{self.database}",
            "JWT_SECRET": JWT_SECRET,
            "HTTP_ADDR": "127.0.0.1:0",
            "ADMIN_ADDR": "127.0.0.1:0",
            "LOG_FORMAT": "json",
            "RUST_LOG": "info",
            "BCRYPT_COST": "10",
            "SHUTDOWN_DELAY_SECONDS": "0",
            # Revocation reaches task-service within a second, so the flow needs no long wait.
            "REVOCATION_POLL_SECONDS": "1",
        } | extra
        log = self.workdir / f"{name}.log"
        process = subprocess.Popen(
            [str(BIN_DIR / name), "serve"],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        service = Service(name, process, log)

        def listening():
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"{name} exited with {process.returncode}:\n{tail}")
            for line in log.read_text(errors="replace").splitlines():
                if f'"{name} listening"' in line:
                    return json.loads(line)
            return None

        line = wait_until(listening, 30, f"{name} to listen")
        service.api, service.admin = line["api"], line["admin"]

        def ready():
            try:
                return requests.get(f"http://{service.admin}/readyz", timeout=2).ok
            except requests.RequestException:
                return False

        wait_until(ready, 30, f"{name} to be ready")
        return service
