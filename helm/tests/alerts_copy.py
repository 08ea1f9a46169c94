"""deploy/prometheus/alerts.yaml is the chart's PrometheusRule, unscoped, for a plain Prometheus.

Regenerate it after changing the chart's alerts:  helm/.venv-chart/bin/python helm/tests/alerts_copy.py
(test_monitoring.py fails while the two differ).
"""

import re
import sys

import yaml

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from conftest import REPO, ci_values, merge, render  # noqa: E402

COPY = REPO / "deploy" / "prometheus" / "alerts.yaml"
HEADER = """\
# Prometheus recording and alerting rules for auth-service and task-service, for a Prometheus
# without the Prometheus Operator (rule_files: [alerts.yaml]): the SLO error ratios (todo.slo,
# todo.slo-budget) and the alerts (todo.rules); docs/runbooks.md has a section per alert, and
# alerts_test.yaml makes each one fire (promtool test rules alerts_test.yaml). The chart's
# PrometheusRule (helm/todo/templates/prometheusrule.yaml) holds the same rules, scoped to its
# release by namespace and job, with each alert behind a flag; helm/tests/test_monitoring.py
# checks that the two stay the same. Regenerate this copy with helm/tests/alerts_copy.py rather
# than by hand.
"""


def unscope(expr: str) -> str:
    """Drops the chart's release scoping ({namespace=..., job=...}) from a PromQL expression."""
    expr = re.sub(r'\{namespace="[^"]*", job=~?"[^"]*"\}', "", expr)
    return re.sub(r'\{namespace="[^"]*", job=~?"[^"]*", ', "{", expr)


def chart_groups() -> list:
    """The chart's rule groups with default values, unscoped, named todo.<group>."""
    objs = render(merge(ci_values("default"), {"prometheusRule": {"enabled": True}}))
    rule = next(o for o in objs if o["kind"] == "PrometheusRule")
    groups = rule["spec"]["groups"]
    for group in groups:
        group["name"] = "todo." + group["name"].split(".", 1)[1]
        for r in group["rules"]:
            r["expr"] = unscope(r["expr"])
    return groups


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)
)

if __name__ == "__main__":
    COPY.write_text(HEADER + yaml.dump({"groups": chart_groups()}, Dumper=_Dumper, sort_keys=False, width=120))
    print(f"wrote {COPY}")
