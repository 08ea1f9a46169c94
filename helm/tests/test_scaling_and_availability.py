"""HPA, PDB and topology spread per service."""

from conftest import by_kind, ci_values, component_name, merge, one, render


def test_hpa_targets_its_deployment_which_then_leaves_replicas_to_it(everything_objs):
    hpas = by_kind(everything_objs, "HorizontalPodAutoscaler")
    assert len(hpas) == 2
    for hpa in hpas:
        target = hpa["spec"]["scaleTargetRef"]
        deployment = one(everything_objs, "Deployment", target["name"])
        assert target["kind"] == "Deployment" and target["apiVersion"] == "apps/v1"
        assert "replicas" not in deployment["spec"]
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert one(everything_objs, "HorizontalPodAutoscaler", "todo-auth-service")["spec"]["maxReplicas"] == 5


def test_without_hpa_the_deployment_sets_replicas(default_objs):
    assert by_kind(default_objs, "HorizontalPodAutoscaler") == []
    assert one(default_objs, "Deployment", component_name("auth"))["spec"]["replicas"] == 2
    objs = render(merge(ci_values("default"), {"task": {"replicaCount": 4}}))
    assert one(objs, "Deployment", component_name("task"))["spec"]["replicas"] == 4


def test_pdb_selects_exactly_its_deployments_pods(default_objs):
    pdbs = by_kind(default_objs, "PodDisruptionBudget")
    assert len(pdbs) == 2
    for pdb in pdbs:
        deployment = one(default_objs, "Deployment", pdb["metadata"]["name"])
        assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
        assert pdb["spec"]["maxUnavailable"] == 1


def test_topology_spread_over_zones_and_nodes(default_objs):
    for deployment in by_kind(default_objs, "Deployment"):
        constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in constraints} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for c in constraints:
            assert c["labelSelector"] == deployment["spec"]["selector"]
    objs = render(merge(ci_values("default"), {"auth": {"topologySpread": {"enabled": False}}}))
    assert "topologySpreadConstraints" not in one(objs, "Deployment", component_name("auth"))["spec"]["template"]["spec"]
