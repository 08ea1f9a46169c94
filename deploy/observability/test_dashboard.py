"""The Grafana dashboard (helm/todo/dashboards/todo.json) against real data. A real Prometheus
scrapes both services every second and evaluates the SLO recording rules of
deploy/prometheus/alerts.yaml, while a script drives logins, a wrong password, a refresh, a
refresh-token reuse, task CRUD, 404s and a client locked out of an account. Then each of the
dashboard's variables is evaluated as Grafana would, substituted into every panel's query, and
each query is run over the traffic's time range: each must be valid PromQL and return a value
(MAY_BE_EMPTY names the panels excused)."""

from __future__ import annotations

import json
import math
import secrets
import time

import requests

from conftest import Traffic
from stack import REPO, wait_until

DASHBOARD = REPO / "helm" / "todo" / "dashboards" / "todo.json"
# Grafana makes $__rate_interval at least four scrape intervals; 10 s is that for the test's 1 s
# scrapes, with room for one that lands late on a busy machine.
RATE_INTERVAL = "10s"
# Panels (by title) whose queries may return nothing after this traffic: none today. A panel
# whose metric appears only on an event the traffic cannot cause is named here, not covered by a
# share of queries allowed to be empty, behind which a broken query (a renamed metric, a wrong
# label) would pass.
MAY_BE_EMPTY: set[str] = set()
CYCLES = 8


def drive_traffic(traffic) -> dict[str, int]:
    """CYCLES rounds of the whole API for one new user, then a client locked out of another
    account. Returns how many task deletions it made (to know when Prometheus has seen them all)."""
    auth, tasks = "/api/v1/auth", "/api/v1/tasks"
    email, password = f"dash-{secrets.token_hex(4)}@example.com", f"pw-{secrets.token_hex(12)}"
    traffic.call("dash_register", "auth-service", "POST", f"{auth}/register",
                 body={"email": email, "password": password}, expect=201)
    for i in range(CYCLES):
        traffic.call("dash_wrong_password", "auth-service", "POST", f"{auth}/login",
                     body={"email": email, "password": password + "x"}, expect=401)
        pair = traffic.call("dash_login", "auth-service", "POST", f"{auth}/login",
                            body={"email": email, "password": password}).json()
        traffic.call("dash_me", "auth-service", "GET", f"{auth}/me", token=pair["access_token"])
        rotated = traffic.call("dash_refresh", "auth-service", "POST", f"{auth}/refresh",
                               body={"refresh_token": pair["refresh_token"]}).json()
        if i == 0:
            # The spent token again: reuse detected, the session revoked.
            traffic.call("dash_reuse", "auth-service", "POST", f"{auth}/refresh",
                         body={"refresh_token": pair["refresh_token"]}, expect=401)
            continue
        token = rotated["access_token"]
        task = traffic.call("dash_create", "task-service", "POST", tasks,
                            body={"title": f"dashboard {i}"}, token=token, expect=201).json()
        item = f"{tasks}/{task['id']}"
        traffic.call("dash_list", "task-service", "GET", tasks, token=token)
        traffic.call("dash_get", "task-service", "GET", item, token=token)
        traffic.call("dash_update", "task-service", "PUT", item, body={"title": "renamed"}, token=token)
        traffic.call("dash_complete", "task-service", "PATCH", f"{item}/complete",
                     body={"completed": True}, token=token)
        traffic.call("dash_delete", "task-service", "DELETE", item, token=token)
        traffic.call("dash_gone", "task-service", "GET", item, token=token, expect=404)
        traffic.call("dash_unknown_route", "auth-service", "GET", "/api/v1/nothing-here", expect=404)
        time.sleep(0.5)  # spread the traffic over several scrapes
    # Wrong passwords for one account from one client until the per-(account, client) limit
    # (FAILED_LOGIN_LIMIT, 10) answers 429: what the lockout panel shows.
    victim = f"dash-victim-{secrets.token_hex(4)}@example.com"
    traffic.call("dash_victim", "auth-service", "POST", f"{auth}/register",
                 body={"email": victim, "password": password}, expect=201)
    statuses = []
    for _ in range(12):
        response = requests.post(f"http://{traffic.stack.auth.api}{auth}/login",
                                 json={"email": victim, "password": "wrong-" + password}, timeout=10)
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401}, statuses
    return {"deleted": CYCLES - 1}


def variable_values(prometheus, query: str) -> list[str]:
    """A `label_values(selector, label)` variable, as Grafana's Prometheus source evaluates it."""
    inner = query.removeprefix("label_values(").removesuffix(")")
    selector, label = (part.strip() for part in inner.rsplit(",", 1))
    body = prometheus.api(f"label/{label}/values", **{"match[]": selector})
    assert body["status"] == "success", body
    return body["data"]


def has_data(result: list[dict]) -> bool:
    return any(not math.isnan(float(v)) for series in result for _, v in series["values"])


def test_every_panel_query_is_valid_and_returns_data(grpc_stack, prometheus):
    dashboard = json.loads(DASHBOARD.read_text())
    wait_until(lambda: len(prometheus.query("up == 1")) == 2, 30, "both services scraped", interval=0.25)
    start = time.time()
    # A Traffic of its own: the other tests check every call of grpc_stack's scenario.
    driven = drive_traffic(Traffic(grpc_stack.stack))

    deletes = 'sum(http_server_requests_total{job="task-service", route="/api/v1/tasks/{id}", method="DELETE"})'

    def scraped_all():
        result = prometheus.query(deletes)
        return result and float(result[0]["value"][1]) >= driven["deleted"]

    wait_until(scraped_all, 30, "Prometheus to scrape the last deletions", interval=0.25)
    locked = 'sum(auth_rate_limited_total{limit="login_account_ip"})'
    wait_until(lambda: (r := prometheus.query(locked)) and float(r[0]["value"][1]) >= 1, 30,
               "Prometheus to scrape the lockout", interval=0.25)
    # The 30-day recording rules, the last ones evaluated, have run on the scraped data.
    wait_until(lambda: len(prometheus.query("todo:slo_latency:error_budget_remaining30d")) >= 2,
               30, "the SLO recording rules", interval=0.25)
    end = time.time()

    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "job"}
    namespaces = variable_values(prometheus, variables["namespace"]["query"]["query"])
    assert namespaces == ["todo"]
    job_query = variables["job"]["query"]["query"].replace("$namespace", namespaces[0])
    jobs = variable_values(prometheus, job_query)
    assert jobs == ["auth-service", "task-service"]
    # Grafana writes a multi-value variable set to All as a regex alternation.
    substitutions = {"$namespace": namespaces[0], "$job": "(" + "|".join(jobs) + ")",
                     "$__rate_interval": RATE_INTERVAL}

    queries, invalid, empty = 0, [], []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in substitutions.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, (panel["title"], expr)
            queries += 1
            body = prometheus.api("query_range", query=expr, start=start, end=end, step=1)
            if body["status"] != "success":
                invalid.append(f'{panel["title"]}: {body.get("error")}')
            elif not has_data(body["data"]["result"]) and panel["title"] not in MAY_BE_EMPTY:
                empty.append(f'{panel["title"]}: {expr}')
    print(f"dashboard: {queries} panel queries, {queries - len(empty) - len(invalid)} returned data;"
          " without data:", empty)
    assert queries >= 40
    assert invalid == []
    assert empty == [], "no data:\n" + "\n".join(empty)
