"""Each live OpenAPI document as three outside tools read it: openapi-spec-validator (the OpenAPI
3.1 schema and its rules), Redocly (redocly.yaml) and Spectral (.spectral.yaml). None may report
an error, nor a warning: a warning is fixed in the document (the utoipa annotations) or its rule
is turned off in the ruleset with the reason beside it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SERVICES = ["auth-service", "task-service"]


def run(*command: str) -> subprocess.CompletedProcess:
    env = os.environ | {"REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"}
    return subprocess.run(command, cwd=HERE, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("service", SERVICES)
def test_openapi_spec_validator_accepts_the_document(documents, service):
    result = run("openapi-spec-validator", str(documents[service]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": OK" in result.stdout, result.stdout


@pytest.mark.parametrize("service", SERVICES)
def test_redocly_finds_no_error_and_no_warning(documents, service):
    result = run(
        "redocly", "lint", str(documents[service]), "--config", "redocly.yaml", "--format", "json"
    )
    report = json.loads(result.stdout)
    # e.g. `error security-defined: Every operation should have security … at ['#/paths/…']`
    problems = [
        f"{p['severity']} {p['ruleId']}: {p['message']} at {[x['pointer'] for x in p['location']]}"
        for p in report["problems"]
    ]
    assert problems == [], "\n".join(problems)
    assert report["totals"]["errors"] == 0 and report["totals"]["warnings"] == 0, report["totals"]
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_spectral_finds_no_error_and_no_warning(documents, service, tmp_path):
    report = tmp_path / "spectral.json"
    result = run(
        "spectral",
        "lint",
        str(documents[service]),
        "--ruleset",
        ".spectral.yaml",
        "--format",
        "json",
        "--output",
        str(report),
        "--fail-severity",
        "hint",
    )
    findings = [
        f"{f['severity']} {f['code']}: {f['message']} at {'.'.join(map(str, f['path']))}"
        for f in json.loads(report.read_text())
    ]
    assert findings == [], "\n".join(findings)
    assert result.returncode == 0, result.stdout + result.stderr
