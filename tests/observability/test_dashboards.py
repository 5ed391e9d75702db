"""The Grafana dashboards (manifests/grafana/): generated, complete, and reading only metrics
that exist: the operator's registry, kinfer-ort-server's and the recording rules."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kinfer_dev.observability import dashboards
from kinfer_dev.observability.dashboards import Query, queries, variable_query

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "manifests" / "grafana"
UNITS = {"reqps", "s", "percentunit", "joule", "none", "ops"}
# PromQL words that look like names but are not metrics.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
GROUPING = r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"


def checked_in() -> dict[str, dict[str, Any]]:
    return {name: json.loads((GRAFANA / name).read_text()) for name in dashboards.DASHBOARDS}


def panels(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in data["panels"] if panel["type"] != "row"]


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(GROUPING, "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        is_call = text[match.end() :].lstrip().startswith("(")
        if not is_call and match.group().lower() not in KEYWORDS:
            names.add(match.group())
    return names


def exposed_names(families: Any) -> set[str]:
    """The series names a registry's families are scraped as."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names = set()
    for family in families:
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names


def operator_names() -> set[str]:
    from prometheus_client.metrics import MetricWrapperBase

    from kinfer.controller import telemetry

    metrics = [m for m in vars(telemetry).values() if isinstance(m, MetricWrapperBase)]
    return exposed_names(family for metric in metrics for family in metric.describe())


def server_names() -> set[str]:
    from kinfer_ort_server.metrics import Metrics

    return exposed_names(Metrics().registry.collect())


def recorded_names() -> set[str]:
    from kinfer.observability import rules

    return {
        rule["record"]
        for group in rules.rule_groups()
        for rule in group["rules"]
        if "record" in rule
    }


def test_checked_in_json_is_the_generators_output() -> None:
    rendered = dashboards.render()
    assert set(rendered) == {path.name for path in GRAFANA.glob("*.json")}
    for name, text in rendered.items():
        assert (GRAFANA / name).read_text() == text, f"{name} is stale: run `make dashboards`"


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    for name in dashboards.DASHBOARDS:
        shutil.copyfile(GRAFANA / name, tmp_path / name)
    assert dashboards.main([str(tmp_path), "--check"]) == 0
    (tmp_path / "kinfer-fleet.json").write_text("{}\n")
    assert dashboards.main([str(tmp_path), "--check"]) == 1
    assert dashboards.main([str(tmp_path)]) == 0
    assert dashboards.main([str(tmp_path), "--check"]) == 0


@pytest.mark.parametrize("name", dashboards.DASHBOARDS)
def test_every_panel_queries_prometheus_with_a_unit(name: str) -> None:
    data = checked_in()[name]
    assert panels(data)
    for panel in panels(data):
        exprs = [target.get("expr", "").strip() for target in panel.get("targets") or []]
        assert exprs and all(exprs), f"{panel['title']}: a target without a query"
        sources = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
        assert all(s == {"type": "prometheus", "uid": "${datasource}"} for s in sources), panel
        assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, panel["title"]
        # Only a table shows `Value #A` columns; every other panel names its series by legend.
        formats = {target.get("format", "time_series") for target in panel["targets"]}
        assert formats == {"table" if panel["type"] == "table" else "time_series"}, panel["title"]
    titles = [panel["title"] for panel in panels(data)]
    assert len(titles) == len(set(titles)), "two panels share a title"


def units_by_title(name: str) -> dict[str, str]:
    return {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in panels(checked_in()[name])}


def test_units() -> None:
    service = units_by_title("kinfer-inferenceservice.json")
    assert service["QPS"] == "reqps"
    assert service["p95 latency against the target"] == "s"
    assert service["SLO share"] == "percentunit"
    assert service["Energy per inference"] == "joule"
    assert service["Time on each tier"] == "s"
    fleet = units_by_title("kinfer-fleet.json")
    assert fleet["QPS"] == "reqps"
    assert fleet["Decision lag"] == "s"
    table = next(p for p in panels(checked_in()["kinfer-fleet.json"]) if p["type"] == "table")
    overrides = {
        o["matcher"]["options"]: o["properties"][0]["value"]
        for o in table["fieldConfig"]["overrides"]
    }
    assert overrides["SLO share (1h)"] == "percentunit"
    assert overrides["QPS (5m)"] == "reqps"
    assert overrides["p95 (5m)"] == overrides["target p95"] == "s"


def test_every_metric_is_one_kinfer_exports_or_records() -> None:
    known = operator_names() | server_names() | recorded_names()
    used: set[str] = set()
    for name, data in checked_in().items():
        for query in queries(data):
            names = metric_names(query.expr)
            assert names, f"{name} {query.title}: no metric in {query.expr!r}"
            unknown = names - known
            assert not unknown, f"{name} {query.title}: {sorted(unknown)} in {query.expr!r}"
            used |= names
    # The SLO share, the p95 against the target, and the fleet's replicas are all shown.
    assert {dashboards.over_target("1h"), dashboards.P95_5M, dashboards.QPS_5M} <= used
    assert "kinfer_inferenceservice_latency_target_seconds" in used
    assert "kinfer_inferenceservice_joules_per_inference" in used


def test_the_recording_rules_named_here_are_the_generators() -> None:
    assert set(dashboards.RECORDING_RULES) <= recorded_names()


def test_metric_names_parser() -> None:
    expr = (
        'sum by (namespace, le) (rate(a_bucket{x="y:z", le="0.1"}[$__rate_interval]))'
        " / on (namespace) group_left (tier) b:c:d offset 5m > bool 0.95 or vector(0)"
    )
    assert metric_names(expr) == {"a_bucket", "b:c:d"}


def test_service_dashboard_variables_and_selectors() -> None:
    data = checked_in()["kinfer-inferenceservice.json"]
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variable_query(variables["namespace"]["query"])[1] == "namespace"
    expr, label = variable_query(variables["inferenceservice"]["query"])
    assert label == "inferenceservice" and 'namespace="$namespace"' in expr
    assert metric_names(expr) <= operator_names()
    # Every panel and annotation reads the selected service only.
    for query in queries(data):
        if query.kind != "variable":
            assert dashboards.SERVICE_SELECTOR in query.expr, query
            assert {"namespace", "inferenceservice"} <= query.expected_labels(), query


def test_service_dashboard_annotations_mark_scale_and_tier_events() -> None:
    data = checked_in()["kinfer-inferenceservice.json"]
    annotations = [a for a in data["annotations"]["list"] if a.get("expr")]
    assert {a["name"] for a in annotations} == {"Scale events", "Tier switches"}
    for annotation in annotations:
        assert annotation["datasource"]["uid"] == "${datasource}"
        assert annotation["titleFormat"] and annotation["enable"]


def test_the_tier_timeline_is_a_state_timeline_of_the_active_tier() -> None:
    timeline = next(
        p
        for p in panels(checked_in()["kinfer-inferenceservice.json"])
        if p["title"] == "Tier timeline"
    )
    assert timeline["type"] == "state-timeline"
    assert metric_names(timeline["targets"][0]["expr"]) == {"kinfer_inferenceservice_active_tier"}


def test_the_fleet_table_links_each_row_to_the_service_dashboard() -> None:
    table = next(p for p in panels(checked_in()["kinfer-fleet.json"]) if p["type"] == "table")
    link = table["fieldConfig"]["defaults"]["links"][0]["url"]
    assert link.startswith(f"/d/{dashboards.SERVICE_UID}/")
    assert "var-namespace=${__data.fields.namespace}" in link
    assert "var-inferenceservice=${__data.fields.inferenceservice}" in link
    assert [t["id"] for t in table["transformations"]] == ["merge", "organize"]
    for target in table["targets"]:
        assert target["instant"] and target["format"] == "table"
        assert {"namespace", "inferenceservice"} <= Query(
            "panel", "t", target["expr"], target["legendFormat"]
        ).expected_labels()


def test_expected_labels_and_variable_queries() -> None:
    assert Query("panel", "t", "x", "{{ tier }} {{reason}}").expected_labels() == {"tier", "reason"}
    assert Query("panel", "t", 'x{inferenceservice="$inferenceservice"}').expected_labels() == {
        "namespace",
        "inferenceservice",
    }
    assert variable_query('label_values(m{a="b"}, ns)') == ('group by (ns) (m{a="b"})', "ns")
    with pytest.raises(ValueError, match="label_values"):
        variable_query("query_result(up)")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus)")
def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    """Each query, its variables replaced as Grafana would, is valid PromQL to the real promtool."""
    substitutions = {
        "$__rate_interval": "1m",
        "$__range": "1h",
        "$namespace": "team-a",
        "$inferenceservice": "mlp",
    }
    rules = []
    for data in checked_in().values():
        for index, query in enumerate(queries(data)):
            expr = query.expr
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, expr
            rules.append({"record": f"dashboard:query:{len(rules)}_{index}", "expr": expr})
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomization_makes_a_sidecar_configmap_of_both_dashboards() -> None:
    kustomization = yaml.safe_load((GRAFANA / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert sorted(generator["files"]) == sorted(dashboards.DASHBOARDS)
    assert generator["options"]["labels"]["grafana_dashboard"] == "1"


def dashboards_doc() -> str:
    """docs/observability.md's Dashboards section."""
    text = (REPO / "docs" / "observability.md").read_text()
    section = text.split("\n## Dashboards\n", 1)[1]
    return section.split("\n## ", 1)[0]


def test_the_docs_name_every_panel_variable_and_annotation() -> None:
    doc = dashboards_doc()
    # How each kind of name stands in the section's tables.
    forms = {"panel": "{}", "variable": "| `{}` |", "annotation": "| {} |"}
    for name, data in checked_in().items():
        assert f"`{name}`" in doc and f"`{data['uid']}`" in doc, name
        for query in queries(data):
            assert forms[query.kind].format(query.title) in doc, (
                f"{name}: {query.kind} {query.title!r} is not in docs/observability.md"
            )
        for panel in panels(data):
            assert panel["fieldConfig"]["defaults"]["unit"] in doc, panel["title"]
