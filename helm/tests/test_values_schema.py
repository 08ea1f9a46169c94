"""values.schema.json is strict: a misspelled or ill-typed value fails, and every value is documented."""

import json
import re

import helm_python
import pytest
import yaml

from conftest import CHART, ci_values, merge, render

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


@pytest.mark.parametrize(
    "typo",
    [
        {"auth": {"replicaCont": 3}},
        {"replicaCont": 3},
        {"task": {"autoscaling": {"maxReplica": 4}}},
        {"ingress": {"tls": {"secret": "x"}}},
        {"networkPolicy": {"database": {"cidr": "10.0.0.0/8"}}},
        {"prometheusRule": {"alerts": {"errorRate": {"enabled": False}}}},
    ],
    ids=["auth.replicaCont", "replicaCont", "maxReplica", "tls.secret", "database.cidr", "alerts.errorRate"],
)
def test_a_misspelled_key_is_rejected(typo):
    with pytest.raises(helm_python.HelmValuesError, match="additional propert"):
        render(merge(ci_values("default"), typo))


@pytest.mark.parametrize(
    "bad",
    [
        {"auth": {"bcryptCost": 9}},
        {"auth": {"replicaCount": "2"}},
        {"auth": {"trustedProxies": ["not-a-cidr"]}},
        {"secrets": {"jwtKeys": [{"kid": "short", "secret": "too-short"}]}},
        {"secrets": {"jwtKeys": [{"kid": "a", "secret": "x" * 40 + ",b:" + "y" * 40}]}},
        {"image": {"digest": "latest"}},
        {"shutdown": {"graceMarginSeconds": 0}},
        # task-service refuses to start unless its 300 s staleness bound is twice the poll.
        {"task": {"revocationPollSeconds": 151}},
        {"otel": {"samplerArg": "10%"}},
    ],
    ids=["bcrypt<10", "string-replicas", "bad-cidr", "short-jwt-key", "comma-in-key", "bad-digest", "no-margin",
         "poll>150", "ratio-not-a-number"],
)
def test_an_invalid_value_is_rejected(bad):
    with pytest.raises(helm_python.HelmValuesError):
        render(merge(ci_values("default"), bad))


def _object_nodes(node, path="$"):
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key, child in node.items():
            yield from _object_nodes(child, f"{path}.{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _object_nodes(child, f"{path}[{i}]")


def test_every_object_level_of_the_schema_is_closed():
    nodes = list(_object_nodes(SCHEMA))
    assert len(nodes) > 50
    for path, node in nodes:
        # Either a record with additionalProperties: false, or a map (labels, annotations,
        # matchLabels) whose values must be strings. Never open.
        extra = node.get("additionalProperties")
        if "properties" in node:
            assert extra is False, path
        else:
            assert extra == {"type": "string"}, path


def test_schema_accepts_exactly_the_keys_of_values_yaml():
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def keys(schema, value, path):
        if isinstance(value, dict) and "properties" in schema:
            # Records whose keys are all required list exactly the keys of values.yaml; the rest
            # (e.g. resources' cpu/memory/ephemeral-storage) may leave optional keys out.
            if "required" in schema:
                assert set(schema["properties"]) == set(value), path
            assert set(value) <= set(schema["properties"]), path
            for key, child in value.items():
                keys(schema["properties"][key], child, f"{path}.{key}")

    keys(SCHEMA, values, "$")


def test_every_value_is_commented():
    # Each leaf key has a comment on the line above, or sits inside a block documented as a
    # whole with a "# --" comment (e.g. resources, selectors).
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack = []  # (indent, documented-as-a-whole)
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z0-9_./-]+):(.*)$", line)
        if not m:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        above = lines[i - 1].strip() if i else ""
        commented = above.startswith("#")
        whole = above.startswith("# --")
        is_leaf = rest != ""
        if is_leaf and not commented and not any(doc for _, doc in stack):
            undocumented.append(f"line {i + 1}: {key}")
        stack.append((indent, whole))
    assert undocumented == []
