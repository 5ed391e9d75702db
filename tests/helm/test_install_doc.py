"""docs/install.md's values table lists every value of the chart with its default, in
values.schema.json's order, and the commands it shows name real paths and flags."""

from __future__ import annotations

import re

from kinfer_dev import chart

DOC = chart.REPO / "docs" / "install.md"
ROW = re.compile(r"^\| `([^`]+)` \| `(.*)` \| .+ \|$")


def documented_values() -> list[tuple[str, str]]:
    section = DOC.read_text().split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    return [m.groups() for line in section.splitlines() if (m := ROW.match(line))]


def test_the_values_table_is_values_yaml() -> None:
    assert documented_values() == chart.values_table()


def test_the_documented_helm_commands_are_the_ones_the_e2e_runs() -> None:
    """e2e/test_helm.py runs these blocks on kind; here, that they are where it looks."""
    install = chart.documented_block("Install with Helm")
    uninstall = chart.documented_block("Uninstalling")
    assert install[0].startswith("helm install kinfer manifests/helm/kinfer ")
    assert any(line.startswith("helm uninstall kinfer ") for line in uninstall)
    for line in install + uninstall:
        for path in re.findall(r"manifests/\S+", line):
            assert (chart.REPO / path).exists(), path


def test_the_upgrade_applies_the_crds_folder() -> None:
    upgrade = DOC.read_text().split("\n## Upgrading\n", 1)[1].split("\n## ", 1)[0]
    assert "kubectl apply --server-side -f manifests/helm/kinfer/crds/" in upgrade
    assert (chart.CHART / "crds").is_dir()
