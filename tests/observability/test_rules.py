"""kinfer's recording rules and alerts: the checked-in files are the generator's, promtool
accepts them, and `promtool test rules` passes on series that fire and that do not."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kinfer.observability import rules
from tests.conftest import REPO

RULES_DIR = REPO / "manifests" / "prometheus" / "rules"
PLAIN = RULES_DIR / "kinfer-rules.yaml"
PROMETHEUS_RULE = RULES_DIR / "prometheusrule.yaml"
LOCAL_COPY = REPO / "operator/dev/kinfer_dev/localcluster/prometheus/kinfer-rules.yaml"
PROMTOOL_TESTS = sorted((Path(__file__).parent).glob("*.test.yaml"))
DOCS = REPO / "docs" / "observability.md"

RECORDING_RULES = [
    "namespace_inferenceservice:kinfer_inference_requests:rate5m",
    "namespace_inferenceservice:kinfer_inference_request_duration_seconds:p95_5m",
    *(
        f"namespace_inferenceservice:kinfer_slo_requests_over_target:ratio_rate{window}"
        for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
    ),
]
ALERTS = [
    "KinferSLOBurnRateFast",
    "KinferSLOBurnRateSlow",
    "KinferLowerTierTooLong",
    "KinferFailStaticTooLong",
    "KinferGPUCapacityInsufficient",
    "KinferOperatorDown",
    "KinferOperatorReconcileErrors",
]


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not on PATH: `make cluster-deps` installs Debian's prometheus "
            "package, which provides /usr/bin/promtool (apt-get install -y prometheus)"
        )
    return binary


def _all_rules(groups: list[dict]) -> list[dict]:
    return [rule for group in groups for rule in group["rules"]]


def test_checked_in_files_are_what_make_rules_writes() -> None:
    hint = "run `make rules` and commit manifests/prometheus/rules/"
    assert PLAIN.read_text() == rules.render_plain(), hint
    assert PROMETHEUS_RULE.read_text() == rules.render_prometheus_rule(), hint
    assert LOCAL_COPY.read_text() == PLAIN.read_text(), hint


def test_the_contract_names() -> None:
    every = _all_rules(rules.rule_groups())
    assert [r["record"] for r in every if "record" in r] == RECORDING_RULES
    assert [r["alert"] for r in every if "alert" in r] == ALERTS
    assert [g["name"] for g in rules.rule_groups()][-1] == "kinfer.alerts"


def test_every_alert_has_severity_annotations_and_a_documented_runbook() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in DOCS.read_text().splitlines()
        if line.startswith("#")
    }
    for alert in _all_rules(rules.rule_groups()):
        if "alert" not in alert:
            continue
        assert alert["labels"]["severity"] in {"page", "ticket", "warning"}
        annotations = alert["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}
        page, anchor = annotations["runbook_url"].split("#")
        assert page == "docs/observability.md" and anchor in anchors, annotations["runbook_url"]
        if alert["alert"].startswith("KinferOperator"):
            continue  # the operator's, not a service's
        assert "{{ $labels.namespace }}/{{ $labels.inferenceservice }}" in annotations["summary"]


def test_the_prometheus_rule_carries_the_same_groups() -> None:
    document = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    assert document["kind"] == "PrometheusRule"
    assert document["metadata"]["namespace"] == "kinfer-system"
    assert document["metadata"]["labels"] == {
        "app.kubernetes.io/name": "kinfer",
        "app.kubernetes.io/part-of": "kinfer",
        "release": "kube-prometheus-stack",
    }
    assert document["spec"] == yaml.safe_load(PLAIN.read_text())


def test_durations_and_burn_factors_are_parameters() -> None:
    settings = rules.RuleSettings(
        slo_objective=0.99,
        fast_burn=(rules.BurnWindow("1h", "5m", 10),),
        lower_tier_for="1h",
        operator_job="operator",
    )
    alerts = {r["alert"]: r for r in _all_rules(rules.rule_groups(settings)) if "alert" in r}
    fast = alerts["KinferSLOBurnRateFast"]["expr"]
    assert "ratio_rate1h > (10 * 0.01)" in fast and "ratio_rate6h" not in fast
    assert alerts["KinferLowerTierTooLong"]["for"] == "1h"
    assert 'up{job="operator"}' in alerts["KinferOperatorDown"]["expr"]


def test_a_burn_window_must_be_a_recorded_one() -> None:
    with pytest.raises(ValueError, match=r"'4h'.*not a recorded window"):
        rules.RuleSettings(slow_burn=(rules.BurnWindow("4h", "5m", 2),))


def test_the_command_prints_either_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert rules.main(["--plain"]) == 0
    assert capsys.readouterr().out == PLAIN.read_text()
    assert rules.main(["--prometheusrule"]) == 0
    assert capsys.readouterr().out == PROMETHEUS_RULE.read_text()


def test_promtool_accepts_the_plain_rules_file() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(PLAIN)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RECORDING_RULES) + len(ALERTS)} rules found" in result.stdout


@pytest.mark.parametrize("test_file", PROMTOOL_TESTS, ids=lambda path: path.name)
def test_promtool_test_rules(test_file: Path) -> None:
    # cwd: promtool reads rule_files relative to the test file's directory.
    result = subprocess.run(
        [promtool(), "test", "rules", test_file.name],
        cwd=test_file.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_there_are_promtool_tests_and_they_order_every_group() -> None:
    assert [p.name for p in PROMTOOL_TESTS] == ["rules-slow.test.yaml", "rules.test.yaml"]
    groups = [group["name"] for group in rules.rule_groups()]
    for test_file in PROMTOOL_TESTS:
        # promtool evaluates the groups of a step in random order without group_eval_order.
        assert yaml.safe_load(test_file.read_text())["group_eval_order"] == groups, test_file.name


def test_the_promtool_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """Without the zero-traffic guard, a service without traffic records a share (NaN):
    the recording-rule test must fail on it."""
    broken = rules.render_plain().replace(" > 0)\n", ")\n")
    assert broken != rules.render_plain()
    (tmp_path / "manifests/prometheus/rules").mkdir(parents=True)
    (tmp_path / "manifests/prometheus/rules/kinfer-rules.yaml").write_text(broken)
    (tmp_path / "tests/observability").mkdir(parents=True)
    shutil.copy(Path(__file__).parent / "rules.test.yaml", tmp_path / "tests/observability")
    result = subprocess.run(
        [promtool(), "test", "rules", "rules.test.yaml"],
        cwd=tmp_path / "tests/observability",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'inferenceservice="idle"' in result.stdout + result.stderr
