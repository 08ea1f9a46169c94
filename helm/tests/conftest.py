"""Shared helpers: render the chart with the real Helm engine and find objects in the output."""

from __future__ import annotations

import base64
import copy
import functools
import json
from pathlib import Path

import helm_python
import pytest
import yaml

HERE = Path(__file__).resolve().parent
CHART = HERE.parent / "todo"
REPO = HERE.parent.parent
CI_VALUES = sorted(CHART.glob("ci/*-values.yaml"))
RELEASE = "rel"
NAMESPACE = "todo"
COMPONENTS = ("auth", "task")

helm_python.disable_logging()


def ci_values(name: str) -> dict:
    """The values of helm/todo/ci/<name>-values.yaml."""
    return yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text()) or {}


def merge(base: dict, override: dict) -> dict:
    """A deep merge of override into a copy of base (like Helm's -f a.yaml -f b.yaml)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@functools.lru_cache(maxsize=None)
def _chart() -> helm_python.Chart:
    return helm_python.Chart.load(str(CHART))


@functools.lru_cache(maxsize=64)
def _render(values_json: str) -> tuple[tuple[str, str], ...]:
    out = _chart().render(values=json.loads(values_json), name=RELEASE, namespace=NAMESPACE)
    return tuple(sorted(out.items()))


def render_files(values: dict | None = None) -> dict[str, str]:
    """{template path: rendered text}, NOTES.txt included."""
    return dict(_render(json.dumps(values or {}, sort_keys=True)))


def render(values: dict | None = None) -> list[dict]:
    """Every object the chart renders (hooks and tests included), parsed as YAML."""
    objs = []
    for path, text in render_files(values).items():
        if path.endswith("NOTES.txt"):
            continue
        objs.extend(o for o in yaml.safe_load_all(text) if o)
    return objs


def notes(values: dict | None = None) -> str:
    return next(t for p, t in render_files(values).items() if p.endswith("NOTES.txt"))


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def component_name(component: str, fullname: str = f"{RELEASE}-todo") -> str:
    return f"{fullname}-{component}-service"


def container(workload: dict) -> dict:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env(workload: dict) -> dict[str, dict]:
    """{name: EnvVar} of a workload's only container."""
    return {e["name"]: e for e in container(workload)["env"]}


def secret_value(secret: dict, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def pod_specs(objs: list[dict]) -> list[tuple[str, dict]]:
    """(description, pod spec) of every pod the chart can start: Deployments, Jobs, Pods."""
    out = []
    for o in objs:
        if o["kind"] in ("Deployment", "Job"):
            out.append((f'{o["kind"]}/{o["metadata"]["name"]}', o["spec"]["template"]["spec"]))
        elif o["kind"] == "Pod":
            out.append((f'Pod/{o["metadata"]["name"]}', o["spec"]))
    return out


@pytest.fixture(params=[p.name.removesuffix("-values.yaml") for p in CI_VALUES])
def case(request) -> str:
    """The name of each helm/todo/ci/*-values.yaml case."""
    return request.param


@pytest.fixture
def default_objs() -> list[dict]:
    return render(ci_values("default"))


@pytest.fixture
def everything_objs() -> list[dict]:
    return render(ci_values("everything"))
