"""Every pod the chart starts meets the restricted Pod Security Standard, read-only, with limits."""

from conftest import ci_values, pod_specs, render


def test_every_pod_is_restricted(case):
    values = ci_values(case)
    specs = pod_specs(render(values))
    # Two Deployments, two migrate Jobs (or two init containers instead), the test pod.
    if values.get("migrations", {}).get("mode") == "initContainer":
        assert len(specs) == 3
        assert sum(len(spec.get("initContainers", [])) for _, spec in specs) == 2
    else:
        assert len(specs) == 5
    for name, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] >= 10000, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["runAsNonRoot"] is True, name
            assert sc.get("privileged", False) is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert "add" not in sc["capabilities"], name
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)


def test_service_accounts_never_mount_a_token(default_objs):
    accounts = [o for o in default_objs if o["kind"] == "ServiceAccount"]
    assert len(accounts) == 3
    assert all(a["automountServiceAccountToken"] is False for a in accounts)


def test_pods_run_as_their_own_service_account(default_objs):
    accounts = {o["metadata"]["name"] for o in default_objs if o["kind"] == "ServiceAccount"}
    for name, spec in pod_specs(default_objs):
        if name.startswith("Pod/"):
            continue
        assert spec["serviceAccountName"] in accounts, name
