"""The chart renders and lints cleanly for every CI case, and refuses to render without secrets."""

import helm_python
import pytest
import yaml

from conftest import CHART, CI_VALUES, ci_values, render, render_files


def test_every_expected_ci_case_exists():
    names = {p.name for p in CI_VALUES}
    assert {"default-values.yaml", "existing-secret-values.yaml", "everything-values.yaml"} <= names


def test_case_renders_only_parseable_kubernetes_objects(case):
    files = render_files(ci_values(case))
    assert any(p.endswith("deployment.yaml") for p in files)
    for path, text in files.items():
        if path.endswith("NOTES.txt"):
            continue
        for obj in yaml.safe_load_all(text):
            if obj is None:
                continue
            assert {"apiVersion", "kind", "metadata"} <= obj.keys(), path
            assert obj["metadata"]["name"], path


def test_case_lints_strictly_without_errors(case):
    report = helm_python.lint(str(CHART), values=ci_values(case), strict=True, namespace="todo")
    assert report["errors"] == [], report
    # Severity 1 is INFO (e.g. "icon is recommended"); warnings (2) and errors (4) must not appear.
    assert [m for m in report["messages"] if m["severity"] > 1] == [], report


def test_chart_defaults_alone_refuse_to_render_without_a_key_ring():
    # There is no safe default JWT key or database URL: the chart fails with a clear message
    # instead of inventing one. ci/default-values.yaml is the least an operator must give.
    with pytest.raises(helm_python.HelmError, match="secrets.jwtKeys must list at least one"):
        render({})


def test_missing_database_url_is_a_clear_error():
    values = ci_values("default")
    values["secrets"]["database"]["task"]["url"] = ""
    with pytest.raises(helm_python.HelmError, match="secrets.database.task.url is required"):
        render(values)


def test_object_names_are_unique_per_kind(case):
    objs = render(ci_values(case))
    keys = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(keys) == len(set(keys))


def test_every_object_is_in_the_release_namespace_and_labelled(case):
    for obj in render(ci_values(case)):
        meta = obj["metadata"]
        assert meta["namespace"] == "todo", (obj["kind"], meta["name"])
        assert meta["labels"]["app.kubernetes.io/instance"] == "rel"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
