"""kinfer's Grafana dashboards, built with grafana-foundation-sdk: `make dashboards` writes
manifests/grafana/ from here (`python -m kinfer_dev.observability.dashboards DIR [--check]`).

Every metric a panel reads is an operator metric (kinfer.controller.telemetry), a
kinfer-ort-server series or a recording rule, as docs/observability.md lists them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, units
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

FLEET_UID = "kinfer-fleet"
SERVICE_UID = "kinfer-inferenceservice"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
BY_SERVICE = "namespace, inferenceservice"
SERVICE_SELECTOR = '{namespace="$namespace", inferenceservice="$inferenceservice"}'
SERVICE_LEGEND = "{{namespace}}/{{inferenceservice}}"
# The target is a p95: 95 % of requests within it, an error budget of 5 %.
SLO_OBJECTIVE = 0.95
ERROR_BUDGET = 0.05
TAGS = ["kinfer"]

# The recording rules the dashboards read (docs/observability.md, Recording rules).
QPS_5M = "namespace_inferenceservice:kinfer_inference_requests:rate5m"
P95_5M = "namespace_inferenceservice:kinfer_inference_request_duration_seconds:p95_5m"
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def over_target(window: str) -> str:
    """The recorded share of requests slower than the target over `window` (0..1)."""
    return f"namespace_inferenceservice:kinfer_slo_requests_over_target:ratio_rate{window}"


RECORDING_RULES = (QPS_5M, P95_5M, *(over_target(window) for window in SLO_WINDOWS))


# --- panels -------------------------------------------------------------------------

# How a panel's targets query: over the time range, or the last value (as series or a table).
RANGE, INSTANT, TABLE = "range", "instant", "table"


def _query(expr: str, legend: str, ref_id: str, mode: str) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id)
    query = query.datasource(DATASOURCE)
    if mode == RANGE:
        return query.range()
    query = query.instant()
    # A table's columns are the labels and `Value #<refId>`; elsewhere the legend names it.
    return query.format(PromQueryFormat.TABLE) if mode == TABLE else query


def _targets(panel: Any, queries: Sequence[tuple[str, str]], mode: str = RANGE) -> Any:
    """`queries` ((expr, legend), ...) as the panel's targets A, B, C..."""
    for index, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + index), mode))
    return panel


def _frame(panel: Any, title: str, description: str, unit: str, size: tuple[int, int]) -> Any:
    width, height = size
    return (
        panel.title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
    )


def _thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def _legend() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .show_legend(True)
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
    )


def graph(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[tuple[str, str]],
    size: tuple[int, int] = (12, 8),
) -> timeseries.Panel:
    """A time series panel of range queries."""
    panel = _frame(timeseries.Panel(), title, description, unit, size)
    return _targets(panel.legend(_legend()).line_width(1).fill_opacity(10), queries)


def single(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[tuple[str, str]],
    size: tuple[int, int] = (3, 4),
) -> stat.Panel:
    """A stat panel: the last value of each instant query."""
    panel = _frame(stat.Panel(), title, description, unit, size)
    panel = panel.graph_mode(common.BigValueGraphMode.NONE).reduce_options(
        common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
    )
    return _targets(panel, queries, INSTANT)


_YES_NO = [
    model.ValueMap(
        options={
            "0": model.ValueMappingResult(text="no", color="green", index=0),
            "1": model.ValueMappingResult(text="yes", color="red", index=1),
        }
    )
]


# --- the fleet overview -------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of the fleet table: an instant query by namespace and inferenceservice."""

    title: str
    expr: str
    unit: str
    hidden: bool = False
    yes_no: bool = False


def _per_service(aggregation: str, expr: str) -> str:
    return f"{aggregation} by ({BY_SERVICE}) ({expr})"


FLEET_COLUMNS = (
    # The active tier is the `tier` label of its series (value 1): the column is the label.
    Column(
        "active tier",
        f"max by ({BY_SERVICE}, tier) (kinfer_inferenceservice_active_tier) == 1",
        units.NoUnit,
        hidden=True,
    ),
    Column("QPS (5m)", _per_service("sum", QPS_5M), units.RequestsPerSecond),
    Column("p95 (5m)", _per_service("max", P95_5M), units.Seconds),
    Column(
        "target p95",
        _per_service("max", "kinfer_inferenceservice_latency_target_seconds"),
        units.Seconds,
    ),
    Column("SLO share (1h)", f"1 - {_per_service('max', over_target('1h'))}", units.PercentUnit),
    Column(
        "desired", _per_service("max", "kinfer_inferenceservice_desired_replicas"), units.NoUnit
    ),
    Column("ready", _per_service("max", "kinfer_inferenceservice_ready_replicas"), units.NoUnit),
    Column(
        "fail-static",
        _per_service("max", "kinfer_inferenceservice_fail_static"),
        units.NoUnit,
        yes_no=True,
    ),
    Column(
        "GPU capacity short",
        _per_service("max", "kinfer_inferenceservice_capacity_insufficient"),
        units.NoUnit,
        yes_no=True,
    ),
)


def _value_field(index: int) -> str:
    """The field Grafana names an instant table query's value: `Value #A`, `Value #B`..."""
    return f"Value #{chr(ord('A') + index)}"


def _organize() -> model.DataTransformerConfig:
    rename = {_value_field(i): column.title for i, column in enumerate(FLEET_COLUMNS)}
    exclude = {"Time": True}
    exclude.update({_value_field(i): True for i, c in enumerate(FLEET_COLUMNS) if c.hidden})
    order = ["namespace", "inferenceservice", "tier"]
    order += [column.title for column in FLEET_COLUMNS if not column.hidden]
    return model.DataTransformerConfig(
        id_val="organize",
        options={
            "excludeByName": exclude,
            "renameByName": rename,
            "indexByName": {name: index for index, name in enumerate(order)},
        },
    )


def _service_link() -> dashboard.DashboardLink:
    return dashboard.DashboardLink("InferenceService dashboard").url(
        f"/d/{SERVICE_UID}/{SERVICE_UID}?var-datasource=${{datasource}}"
        "&var-namespace=${__data.fields.namespace}"
        "&var-inferenceservice=${__data.fields.inferenceservice}&${__url_time_range}"
    )


def fleet_table() -> table.Panel:
    """Every InferenceService, one row each: the columns' instant queries merged by label."""
    panel = _frame(
        table.Panel(),
        "InferenceServices",
        "One row per InferenceService: its active tier, QPS and p95 over 5 minutes, its p95"
        " target, the share of requests within the target over the last hour (the SLO is"
        f" {SLO_OBJECTIVE:.0%}), its desired and Ready replicas, and whether it is"
        " fail-static or short of GPU capacity. Click a row for its own dashboard.",
        units.NoUnit,
        (24, 10),
    )
    queries = [
        (column.expr, SERVICE_LEGEND + (" {{tier}}" if column.hidden else ""))
        for column in FLEET_COLUMNS
    ]
    panel = _targets(panel, queries, TABLE)
    panel = panel.with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
    panel = panel.with_transformation(_organize()).data_links([_service_link()])
    for column in FLEET_COLUMNS:
        properties = [model.DynamicConfigValue(id_val="unit", value=column.unit)]
        if column.yes_no:
            properties.append(model.DynamicConfigValue(id_val="mappings", value=_YES_NO))
        panel = panel.override_by_name(column.title, properties)
    return panel


def fleet_totals() -> list[Any]:
    def total(metric: str) -> str:
        return f"sum({_per_service('max', metric)})"

    below_slo = f"sum((1 - {over_target('1h')}) < bool {SLO_OBJECTIVE})"
    return [
        single(
            "Services",
            "InferenceServices the operator reports on.",
            units.NoUnit,
            [(f"count({_per_service('max', 'kinfer_inferenceservice_current_replicas')})", "")],
        ),
        single(
            "QPS",
            "Requests per second over 5 minutes, all services.",
            units.RequestsPerSecond,
            [(f"sum({QPS_5M})", "")],
        ),
        single(
            "Ready replicas",
            "Ready model-server pods, all services.",
            units.NoUnit,
            [(total("kinfer_inferenceservice_ready_replicas"), "")],
        ),
        single(
            "Desired replicas",
            "Replicas the autoscaler asks for, all services.",
            units.NoUnit,
            [(total("kinfer_inferenceservice_desired_replicas"), "")],
        ),
        single(
            "Below the SLO (1h)",
            f"Services with fewer than {SLO_OBJECTIVE:.0%} of the last hour's requests within"
            " their p95 target.",
            units.NoUnit,
            [(below_slo, "")],
        ).thresholds(_thresholds((None, "green"), (1, "red"))),
        single(
            "On a lower tier",
            "Services serving a tier other than their first.",
            units.NoUnit,
            [(total("kinfer_inferenceservice_on_lower_tier"), "")],
        ),
        single(
            "Fail-static",
            "Services whose replicas are held: their metrics are unusable.",
            units.NoUnit,
            [(total("kinfer_inferenceservice_fail_static"), "")],
        ),
        single(
            "GPU capacity short",
            "Services whose GPUCapacityAvailable condition is False.",
            units.NoUnit,
            [(total("kinfer_inferenceservice_capacity_insufficient"), "")],
        ),
    ]


def _rate(metric: str, selector: str = "") -> str:
    return f"rate({metric}{selector}[$__rate_interval])"


def operator_health() -> list[Any]:
    lag = (
        "histogram_quantile({q}, sum by (le) (" + _rate("kinfer_decision_lag_seconds_bucket") + "))"
    )
    # Zero, not nothing, while the operator reads metrics and none failed.
    read_failures = (
        f"sum({_rate('kinfer_metric_read_failures_total')})"
        f" or sum({_rate('kinfer_metric_reads_total')}) * 0"
    )
    return [
        graph(
            "Reconciles by result",
            "InferenceService reconciles per second, by result.",
            units.OpsPerSecond,
            [(f"sum by (result) ({_rate('kinfer_reconciles_total')})", "{{result}}")],
            (8, 8),
        ),
        graph(
            "Decision lag",
            "How late a scaling decision came: the time between two decisions of one service"
            " minus its period (p99 and p50).",
            units.Seconds,
            [(lag.format(q=0.99), "p99"), (lag.format(q=0.5), "p50")],
            (8, 8),
        ),
        graph(
            "Metric reads and failures",
            "Prometheus queries the operator sent for its decisions, and decisions made"
            " without usable metrics (replicas held).",
            units.OpsPerSecond,
            [
                (f"sum({_rate('kinfer_metric_reads_total')})", "queries"),
                (read_failures, "decisions without metrics"),
            ],
            (8, 8),
        ),
        graph(
            "Decisions by reason",
            "Scaling decisions per second, by the deciding stage.",
            units.OpsPerSecond,
            [(f"sum by (reason) ({_rate('kinfer_decisions_total')})", "{{reason}}")],
        ),
        graph(
            "Kubernetes API requests",
            "Requests kinfer's Kubernetes client sent, by verb.",
            units.RequestsPerSecond,
            [(f"sum by (verb) ({_rate('kinfer_api_requests_total')})", "{{verb}}")],
        ),
    ]


def _datasource_variable() -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")


def fleet() -> dashboard.Dashboard:
    """The fleet overview: every InferenceService, fleet totals, the operator's health."""
    board = (
        dashboard.Dashboard("kinfer: fleet")
        .uid(FLEET_UID)
        .description("Every InferenceService kinfer runs, the fleet's totals, the operator.")
        .tags(TAGS)
        .time("now-1h", "now")
        .refresh("30s")
        .annotation(_builtin_annotations())
        .with_variable(_datasource_variable())
        .with_row(dashboard.Row("InferenceServices"))
        .with_panel(fleet_table())
        .with_row(dashboard.Row("Fleet"))
    )
    for panel in fleet_totals():
        board = board.with_panel(panel)
    board = board.with_row(dashboard.Row("Operator"))
    for panel in operator_health():
        board = board.with_panel(panel)
    return board


# --- one InferenceService -----------------------------------------------------------


def _service(metric: str) -> str:
    """`metric` of the dashboard's InferenceService."""
    return metric + SERVICE_SELECTOR


def _service_rate(metric: str) -> str:
    return _rate(metric, SERVICE_SELECTOR)


def _quantile(q: float, bucket: str) -> str:
    return f"histogram_quantile({q}, sum by ({BY_SERVICE}, le) ({_service_rate(bucket)}))"


def traffic() -> list[Any]:
    latency = graph(
        "p95 latency against the target",
        "The p95 over 5 minutes (recorded) and over the rate interval, across every pod"
        " (from the servers' histograms), and the target (spec.scaling.targetLatencyP95Ms)."
        " Triton serves summaries, not histograms: no cross-pod p95 for it.",
        units.Seconds,
        [
            (_service(P95_5M), "p95 (5m)"),
            (_quantile(0.95, "kinfer_inference_request_duration_seconds_bucket"), "p95"),
            (
                _per_service("max", _service("kinfer_inferenceservice_latency_target_seconds")),
                "target",
            ),
        ],
    )
    dashed_red = [
        model.DynamicConfigValue(
            id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
        ),
        model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"}),
    ]
    by_tier = _service_rate("kinfer_inference_requests_total")
    return [
        graph(
            "QPS",
            "Requests per second: over 5 minutes (recorded), by tier over the rate interval,"
            " and arriving now (the servers' last second).",
            units.RequestsPerSecond,
            [
                (_service(QPS_5M), "5m"),
                (f"sum by ({BY_SERVICE}, tier) ({by_tier})", "{{tier}}"),
                (_per_service("sum", _service("kinfer_inference_arrival_rate")), "arriving now"),
            ],
        ),
        latency.override_by_name("target", dashed_red),
    ]


def replicas_and_tiers() -> list[Any]:
    tier_states = [
        model.ValueMap(
            options={
                "0": model.ValueMappingResult(text=" ", color="transparent", index=0),
                "1": model.ValueMappingResult(text="serving", color="green", index=1),
            }
        )
    ]
    by_tier = f"{BY_SERVICE}, tier"
    timeline = _frame(
        statetimeline.Panel(),
        "Tier timeline",
        "The precision tier the Ready pods serve (status.activeTier), one line a tier.",
        units.NoUnit,
        (12, 8),
    ).mappings(tier_states)
    timeline = _targets(
        timeline.show_value(common.VisibilityMode.NEVER).merge_values(True),
        [(f"max by ({by_tier}) ({_service('kinfer_inferenceservice_active_tier')})", "{{tier}}")],
    )
    return [
        graph(
            "Replicas",
            "Replicas the last decision asked for, spec.replicas, and Ready pods.",
            units.NoUnit,
            [
                (_per_service("max", _service(f"kinfer_inferenceservice_{kind}_replicas")), kind)
                for kind in ("desired", "current", "ready")
            ],
        ).decimals(0),
        timeline,
    ]


def service_state() -> list[Any]:
    tier_seconds = (
        f"sum by ({BY_SERVICE}, tier) "
        f"(increase({_service('kinfer_inferenceservice_tier_seconds_total')}[$__range]))"
    )
    time_on_tiers = _frame(
        bargauge.Panel(),
        "Time on each tier",
        "Seconds the Ready pods served each tier over the dashboard's time range.",
        units.Seconds,
        (8, 6),
    )
    time_on_tiers = _targets(
        time_on_tiers.orientation(common.VizOrientation.HORIZONTAL),
        [(tier_seconds, "{{tier}}")],
        INSTANT,
    )
    events = [
        (
            f"sum by ({BY_SERVICE}, direction) "
            f"(increase({_service('kinfer_inferenceservice_scale_events_total')}[$__range]))",
            "scale {{direction}}",
        ),
        (
            f"sum by ({BY_SERVICE}) "
            f"(increase({_service('kinfer_inferenceservice_tier_switches_total')}[$__range]))",
            "tier switches",
        ),
    ]
    flags = [
        (_per_service("max", _service(f"kinfer_inferenceservice_{metric}")), legend)
        for metric, legend in (
            ("on_lower_tier", "on a lower tier"),
            ("fail_static", "fail-static"),
            ("capacity_insufficient", "GPU capacity short"),
        )
    ]
    return [
        time_on_tiers,
        single(
            "Scale events and tier switches",
            "Scale-outs, scale-ins and tier switches over the dashboard's time range.",
            units.NoUnit,
            events,
            (8, 6),
        ).decimals(0),
        single(
            "State",
            "Whether the service is on a lower tier, fail-static (replicas held"
            " without usable metrics) or short of GPU capacity.",
            units.NoUnit,
            flags,
            (8, 6),
        ).mappings(_YES_NO),
    ]


def slo() -> list[Any]:
    shares = [(f"1 - {_service(over_target(w))}", w) for w in ("5m", "1h", "1d")]
    burn = [(f"{_service(over_target(w))} / {ERROR_BUDGET}", w) for w in ("5m", "1h", "6h")]
    return [
        single(
            "SLO share",
            f"Share of requests within the p95 target over 5 minutes, 1 hour and 1 day (the"
            f" SLO is {SLO_OBJECTIVE:.0%}). Counted at the server's latency bucket at or below"
            " the target; none for Triton (no histograms).",
            units.PercentUnit,
            shares,
            (8, 6),
        ).thresholds(_thresholds((None, "red"), (SLO_OBJECTIVE, "green"))),
        graph(
            "Error budget burn rate",
            f"The share of requests over the target divided by the error budget"
            f" ({ERROR_BUDGET:.0%}): above 1, the budget runs out before its period ends.",
            units.NoUnit,
            burn,
            (16, 6),
        ),
    ]


def server() -> list[Any]:
    requests = f"sum by ({BY_SERVICE}) ({_service_rate('kinfer_inference_requests_total')})"
    failures = f"sum by ({BY_SERVICE}) ({_service_rate('kinfer_inference_failures_total')})"
    batch = (
        f"sum by ({BY_SERVICE}) ({_service_rate('kinfer_inference_batch_size_sum')})"
        f" / sum by ({BY_SERVICE}) ({_service_rate('kinfer_inference_batch_size_count')})"
    )
    size = (6, 6)
    return [
        graph(
            "Failed requests",
            "Share of requests that failed (zero while none did).",
            units.PercentUnit,
            [(f"({failures} or {requests} * 0) / {requests}", "failed")],
            size,
        ),
        graph(
            "Queue time p95",
            "p95 of the time a request waited for its batch.",
            units.Seconds,
            [(_quantile(0.95, "kinfer_inference_queue_duration_seconds_bucket"), "p95")],
            size,
        ),
        graph(
            "In-flight requests",
            "Requests being handled now, all pods.",
            units.NoUnit,
            [(_per_service("sum", _service("kinfer_inference_inflight_requests")), "in flight")],
            size,
        ),
        graph("Mean batch size", "Rows per executed batch.", units.NoUnit, [(batch, "rows")], size),
    ]


def energy() -> list[Any]:
    return [
        graph(
            "Energy per inference",
            "GPU joules per inference on each tier (status.energy), where the cluster exposes"
            " GPU energy: dcgm-exporter or Triton on real GPUs. The local cluster's figures"
            " come from its simulated GPU power exporter.",
            units.Joule,
            [
                (
                    f"max by ({BY_SERVICE}, tier) "
                    f"({_service('kinfer_inferenceservice_joules_per_inference')})",
                    "{{tier}}",
                ),
            ],
            (24, 8),
        ),
    ]


@dataclass(frozen=True)
class Events:
    """A Prometheus annotation: a marker wherever `expr` has a value."""

    name: str
    expr: str
    title_format: str
    tag_keys: str
    color: str


# From gauges, not from the scale-event and tier-switch counters: a labelled counter's series
# appears at its first increment, which increase() cannot see (no sample before it).
_DESIRED = _service("kinfer_inferenceservice_desired_replicas")
_ACTIVE_TIER = _service("kinfer_inferenceservice_active_tier")
SERVICE_EVENTS = (
    Events(
        "Scale events",
        f"max by ({BY_SERVICE}) (changes({_DESIRED}[$__rate_interval])) > 0",
        "desired replicas changed",
        "inferenceservice",
        "blue",
    ),
    Events(
        "Tier switches",
        # The tier whose active_tier went to 1: the one switched to.
        f"max by ({BY_SERVICE}, tier) "
        f"(changes({_ACTIVE_TIER}[$__rate_interval]) > 0 and {_ACTIVE_TIER} == 1)",
        "tier switched to {{tier}}",
        "tier",
        "orange",
    ),
)
# Prometheus annotation fields the SDK's AnnotationQuery does not model, added to the JSON.
_ANNOTATION_EXTRAS = {
    events.name: {"titleFormat": events.title_format, "tagKeys": events.tag_keys}
    for events in SERVICE_EVENTS
}


def _service_variables() -> list[Any]:
    source = "kinfer_inferenceservice_current_replicas"
    namespace = (
        dashboard.QueryVariable("namespace")
        .label("Namespace")
        .datasource(DATASOURCE)
        .query(f"label_values({source}, namespace)")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )
    service = (
        dashboard.QueryVariable("inferenceservice")
        .label("InferenceService")
        .datasource(DATASOURCE)
        .query(f'label_values({source}{{namespace="$namespace"}}, inferenceservice)')
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )
    return [_datasource_variable(), namespace, service]


def _builtin_annotations() -> dashboard.AnnotationQuery:
    return (
        dashboard.AnnotationQuery()
        .name("Annotations & Alerts")
        .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .type("dashboard")
        .built_in(1)
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
    )


def inferenceservice() -> dashboard.Dashboard:
    """One InferenceService: traffic, latency, replicas, tiers, SLO, server, energy."""
    board = (
        dashboard.Dashboard("kinfer: InferenceService")
        .uid(SERVICE_UID)
        .description(
            "One InferenceService: its traffic and p95 against the target, replicas,"
            " tiers, SLO, server and energy, with its scale and tier events."
        )
        .tags(TAGS)
        .time("now-1h", "now")
        .refresh("30s")
        .annotation(_builtin_annotations())
    )
    for variable in _service_variables():
        board = board.with_variable(variable)
    for events in SERVICE_EVENTS:
        board = board.annotation(
            dashboard.AnnotationQuery()
            .name(events.name)
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color(events.color)
            .expr(events.expr)
        )
    rows: list[tuple[str, Callable[[], list[Any]]]] = [
        ("Traffic and latency", traffic),
        ("Replicas and tiers", replicas_and_tiers),
        ("State and events", service_state),
        ("SLO", slo),
        ("Server", server),
        ("Energy", energy),
    ]
    for title, panels in rows:
        board = board.with_row(dashboard.Row(title))
        for panel in panels():
            board = board.with_panel(panel)
    return board


# --- JSON ---------------------------------------------------------------------------

DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "kinfer-fleet.json": fleet,
    "kinfer-inferenceservice.json": inferenceservice,
}


def to_json(board: dashboard.Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana imports it: panels numbered, annotation extras added."""
    data = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for number, panel in enumerate(data.get("panels") or [], start=1):
        panel["id"] = number
    for annotation in (data.get("annotations") or {}).get("list") or []:
        annotation.update(_ANNOTATION_EXTRAS.get(annotation.get("name"), {}))
    return dict(data)


def render() -> dict[str, str]:
    """File name -> JSON text, as `make dashboards` writes them."""
    return {
        name: json.dumps(to_json(build()), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


# --- what the dashboards query (the tests read the JSON through these) ----------------


@dataclass(frozen=True)
class Query:
    """One PromQL query a dashboard runs: a panel target, a variable or an annotation."""

    kind: str  # "panel", "variable" or "annotation"
    title: str  # the panel's title, the variable's or annotation's name
    expr: str
    legend: str = ""
    label: str = ""  # a variable's: the label whose values it lists

    def expected_labels(self) -> set[str]:
        """Labels every answer must carry: those its legend names, the variable's label,
        and namespace and inferenceservice where it selects the dashboard's service."""
        labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", self.legend))
        if self.label:
            labels.add(self.label)
        if "$inferenceservice" in self.expr:
            labels |= {"namespace", "inferenceservice"}
        return labels


_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def variable_query(query: str) -> tuple[str, str]:
    """`label_values(SELECTOR, LABEL)` as the instant query `group by (LABEL) (SELECTOR)`."""
    match = _LABEL_VALUES.match(query.strip())
    if match is None:
        raise ValueError(f"variable query {query!r}: expected label_values(SELECTOR, LABEL)")
    label = match["label"]
    return f"group by ({label}) ({match['selector']})", label


def queries(data: dict[str, Any]) -> Iterator[Query]:
    """Every query of a dashboard's JSON: panel targets, query variables, annotations."""
    for panel in data.get("panels") or []:
        for target in panel.get("targets") or []:
            expr, legend = target.get("expr", ""), target.get("legendFormat", "")
            yield Query("panel", panel["title"], expr, legend)
    for variable in (data.get("templating") or {}).get("list") or []:
        if variable.get("type") == "query":
            expr, label = variable_query(variable["query"])
            yield Query("variable", variable["name"], expr, label=label)
    for annotation in (data.get("annotations") or {}).get("list") or []:
        if annotation.get("expr"):
            # Its title and tags are read from these labels, as a legend's are.
            tags = [key for key in annotation.get("tagKeys", "").split(",") if key]
            legend = " ".join([annotation.get("titleFormat", ""), *(f"{{{{{t}}}}}" for t in tags)])
            yield Query("annotation", annotation["name"], annotation["expr"], legend)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="where to write the JSON (manifests/grafana)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file differs"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out_dir / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)
    if stale:
        print(f"out of date (run `make dashboards`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
