"""The rules of deploy/prometheus/alerts.yaml (the chart's, unscoped): `promtool check rules` finds
them clean, and the unit tests beside them (alerts_test.yaml) make every alert fire, keep each
burn-rate alert quiet where it must be, and fail when a rule is broken."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from stack import REPO

RULES = REPO / "deploy" / "prometheus" / "alerts.yaml"
TESTS = REPO / "deploy" / "prometheus" / "alerts_test.yaml"


def promtool(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def alert_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"] for g in groups for r in g["rules"] if "alert" in r}


def alert_cases() -> list[dict]:
    return [case for test in yaml.safe_load(TESTS.read_text())["tests"] for case in test.get("alert_rule_test", [])]


def test_promtool_check_rules_is_clean():
    result = promtool("check", "rules", str(RULES))
    groups = yaml.safe_load(RULES.read_text())["groups"]
    count = sum(len(g["rules"]) for g in groups)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {count} rules found" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", TESTS.name, cwd=TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_fires_in_a_unit_test():
    fired = {case["alertname"] for case in alert_cases() if case.get("exp_alerts")}
    assert len(alert_names()) >= 13
    assert fired == alert_names()


def test_each_burn_rate_alert_has_a_case_where_it_must_not_fire():
    quiet = {case["alertname"] for case in alert_cases() if case.get("exp_alerts") == []}
    burn = {name for name in alert_names() if name.endswith("Burn")}
    assert burn == {"TodoAvailabilityFastBurn", "TodoAvailabilitySlowBurn", "TodoLatencyFastBurn", "TodoLatencySlowBurn"}
    assert burn <= quiet


@pytest.mark.parametrize(
    "broken, new, failing",
    [
        # A fast burn that needs 1000x never pages.
        ("> 14.4", "> 1000", "TodoAvailabilityFastBurn"),
        # Prometheus 2 keeps the exporter's le="1": a matcher for "1.0" alone finds no bucket.
        ('le=~"1(\\\\.0)?"', 'le="1.0"', "TodoLatencyFastBurn"),
        # An SLI counting 4xx instead of 5xx misses every server error.
        ("5..", "4..", "TodoAvailabilityFastBurn"),
    ],
    ids=["threshold", "le-bound", "status-class"],
)
def test_the_unit_tests_fail_when_a_rule_is_broken(tmp_path, broken, new, failing):
    rules = RULES.read_text()
    assert broken in rules
    (tmp_path / RULES.name).write_text(rules.replace(broken, new))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    result = promtool("test", "rules", TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert f"alertname: {failing}" in result.stdout + result.stderr
