"""Every rendered object validates against the strict Kubernetes 1.29.0 and 1.33.0 schemas."""

import kubernetes_validate
import pytest

from conftest import ci_values, render

VERSIONS = ("1.29.0", "1.33.0")
# Custom resources of the Prometheus Operator: kubernetes-validate has no schema for them (it
# only warns), so they are skipped here on purpose and checked field by field in test_monitoring.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_is_valid_in_strict_mode(case, version):
    objs = render(ci_values(case))
    checked = 0
    for obj in objs:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f'{obj["kind"]}/{obj["metadata"]["name"]} invalid in {version}: {e.message} at {list(e.absolute_path)}')
        checked += 1
    assert checked >= 8


def test_the_skipped_kinds_are_exactly_those_without_a_schema(everything_objs):
    without_schema = set()
    for obj in everything_objs:
        try:
            kubernetes_validate.validate(obj, "1.33.0", strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            without_schema.add((obj["apiVersion"], obj["kind"]))
    assert without_schema == CRD_KINDS


def test_strict_validation_catches_a_misplaced_field(default_objs):
    # The validator is not a no-op: an unknown field in a rendered Deployment is rejected.
    deployment = next(o for o in default_objs if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.29.0", strict=True)
