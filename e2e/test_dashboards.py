"""The Grafana dashboards' queries on the real Prometheus, under load.

One InferenceService (onnxruntime, a p95 target, two tiers, one GPU a pod so that the energy
read path covers it) takes bounded loopback load, scales out, and is pinned to its second
tier. Meanwhile every query of manifests/grafana/*.json (each panel target, template variable
and annotation), its variables replaced as Grafana would, runs as an instant query against
the local Prometheus until each has returned at least one series carrying the labels its panel
shows: this service's namespace and inferenceservice where the query is about one service,
and every label its legend (or annotation title and tags) names. A query that never does
fails the test, named by dashboard, panel and PromQL, with what it returned last.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

from e2e.harness import (
    REPO,
    Cluster,
    Models,
    Operator,
    ReadyPodURLs,
    WaitTimeout,
    infer_body,
    wait_for,
)
from kinfer_dev.observability.dashboards import DASHBOARDS, Query, queries
from kinfer_dev.runtime.loadgen import LoadGenerator

GRAFANA = REPO / "manifests" / "grafana"
TIERS = ("fp32", "int8")
TARGET_P95_MS = 250
QPS_PER_REPLICA = 5
LOAD_QPS = 12  # ceil(12 / 5) = 3 replicas, the maximum
# Grafana's $__rate_interval for a 2 s scrape interval is at least 4 scrapes; a minute is
# what a dashboard of the last hour gets.
RATE_INTERVAL = "1m"
# The slowest series to appear: the recording rules' first evaluations after the load, and
# joules per inference after the energy window.
ANSWER_TIMEOUT_S = 360


def dashboard_service(namespace: str, models: Models, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "runtime": "onnxruntime",
            "model": {"name": "mlp"},
            "precision": {
                "tiers": [{"name": t, "storageUri": models.uri(models.tiers[t])} for t in TIERS]
            },
            "resources": {"cpu": "500m", "memory": "512Mi", "gpus": 1},
            "replicas": 1,
            "scaling": {
                "minReplicas": 1,
                "maxReplicas": 3,
                "targetQPSPerReplica": QPS_PER_REPLICA,
                "targetLatencyP95Ms": TARGET_P95_MS,
                "periodSeconds": 5,
                "metricsWindowSeconds": 20,
                "scaleDownStabilizationSeconds": 600,
            },
        },
    }


def instant_query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:
        return list(json.loads(response.read())["data"]["result"])


@dataclass
class Check:
    """One dashboard query and what it returned last."""

    dashboard: str
    query: Query
    last: str = "not run"
    answered: bool = False

    def describe(self) -> str:
        q = self.query
        return f"{self.dashboard}: {q.kind} {q.title!r}: {q.expr}\n    -> {self.last}"


class DashboardQueries:
    """Every query of the dashboards, run until each has answered for one service."""

    def __init__(self, prometheus_url: str, namespace: str, name: str) -> None:
        self.prometheus_url = prometheus_url
        self.service = {"namespace": namespace, "inferenceservice": name}
        self.started_s = time.monotonic()
        self.checks = [
            Check(file, query)
            for file in DASHBOARDS
            for query in queries(json.loads((GRAFANA / file).read_text()))
        ]

    def promql(self, expr: str) -> str:
        """`expr` with the dashboard's variables as Grafana would fill them for this service."""
        since_start_s = math.ceil(time.monotonic() - self.started_s)
        values = {
            **self.service,
            "__rate_interval": RATE_INTERVAL,
            "__interval": RATE_INTERVAL,
            "__range": f"{max(60, since_start_s)}s",
        }
        return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), expr)

    def why_not(self, query: Query, result: list[dict[str, Any]]) -> str | None:
        """None if a series carries the expected labels (and this service's), else why not."""
        if not result:
            return "no series"
        expected = query.expected_labels()
        own = {label: value for label, value in self.service.items() if label in expected}
        for series in result:
            labels = series["metric"]
            if expected <= labels.keys() and all(labels[k] == v for k, v in own.items()):
                return None
        return (
            f"{len(result)} series, none with labels {sorted(expected)} for {own}: "
            f"{[series['metric'] for series in result[:3]]}"
        )

    def poll(self) -> bool:
        """Run every query not answered yet; True once all have."""
        for check in self.checks:
            if check.answered:
                continue
            promql = self.promql(check.query.expr)
            try:
                problem = self.why_not(check.query, instant_query(self.prometheus_url, promql))
            except Exception as error:  # an HTTP or PromQL error: retried, and reported
                problem = f"error: {error}"
            check.answered = problem is None
            check.last = problem or "answered"
        return all(check.answered for check in self.checks)

    def wait(self, timeout_s: float) -> None:
        try:
            wait_for("every dashboard query to answer", self.poll, timeout_s, interval_s=3)
        except WaitTimeout:
            missing = [check.describe() for check in self.checks if not check.answered]
            raise AssertionError(
                f"{len(missing)} of {len(self.checks)} dashboard queries never returned the"
                f" expected series in {timeout_s:.0f}s:\n" + "\n".join(missing)
            ) from None


def spec_replicas(cluster: Cluster, namespace: str, name: str) -> int:
    return int(cluster.get("kisvc", name, "-n", namespace)["spec"]["replicas"])


def active_tier(cluster: Cluster, namespace: str, name: str) -> str | None:
    return cluster.get("kisvc", name, "-n", namespace).get("status", {}).get("activeTier")


def test_every_dashboard_query_answers_under_load(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    if not cluster.is_local or not cluster.prometheus_url:
        pytest.skip(
            "the local cluster's Prometheus scrapes the operator, the servers and the"
            " simulated GPU power exporter"
        )
    name = "dashboards"
    cluster.apply(dashboard_service(namespace, models, name))
    cluster.wait_ready(namespace, name)
    wait_for("the first tier active", lambda: active_tier(cluster, namespace, name) == "fp32", 120)
    # From now on: the annotations mark the events of the last rate interval, so the queries
    # run while the scale-out and the tier switch happen.
    checks = DashboardQueries(cluster.prometheus_url, namespace, name)
    urls = ReadyPodURLs(cluster, namespace, name)
    load = LoadGenerator(
        urls,
        "mlp",
        infer_body(),
        rate_qps=LOAD_QPS,
        max_duration_s=900,
        max_requests=LOAD_QPS * 900,
    )

    def scaled_out() -> bool:
        checks.poll()
        return spec_replicas(cluster, namespace, name) >= 2

    def on_second_tier() -> bool:
        checks.poll()
        return active_tier(cluster, namespace, name) == TIERS[1]

    with urls, load:
        wait_for("a scale-out under load", scaled_out, timeout_s=240, interval_s=2)
        cluster.kubectl(
            "patch", f"kisvc/{name}", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"precision": {"pinned": TIERS[1]}}}),
        )  # fmt: skip
        wait_for(f"the switch to {TIERS[1]}", on_second_tier, timeout_s=180, interval_s=2)
        checks.wait(ANSWER_TIMEOUT_S)
    assert load.result.ok > 0
