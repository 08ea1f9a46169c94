"""Fixtures: both services running on a fresh database, and their live OpenAPI documents saved
to files for the linters and the client generator."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import requests

from services import Services

# Where each service serves its document (the `docs_routes` prefix in each service's openapi.rs).
DOCUMENT_PATHS = {
    "auth-service": "/api/v1/auth/openapi.json",
    "task-service": "/api/v1/tasks/openapi.json",
}


@pytest.fixture(scope="session")
def workdir():
    with tempfile.TemporaryDirectory(prefix="contract-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def services(workdir) -> Services:
    running = Services(workdir)
    try:
        yield running.start()
    finally:
        running.stop()


@pytest.fixture(scope="session")
def documents(services, workdir) -> dict[str, Path]:
    """Each service's live document, as it serves it, in a file of its own."""
    saved = {}
    for name, path in DOCUMENT_PATHS.items():
        service = services.auth if name == "auth-service" else services.task
        response = requests.get(f"{service.base_url}{path}", timeout=10)
        assert response.status_code == 200, (name, response.status_code, response.text[:500])
        document = response.json()
        assert document["openapi"].startswith("3."), document.get("openapi")
        saved[name] = workdir / f"{name}.openapi.json"
        saved[name].write_text(json.dumps(document, indent=2))
    return saved
