"""The kubectl wrapper the demo and the e2e harness share."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kinfer.localcluster.kubectl import Kubectl, KubectlError


def _fake_kubectl(tmp_path: Path, body: str) -> str:
    script = tmp_path / "kubectl"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_runs_with_its_own_kubeconfig_and_passes_stdin(tmp_path: Path) -> None:
    binary = _fake_kubectl(tmp_path, 'echo "$KUBECONFIG $*"; cat\n')
    kubectl = Kubectl(binary, tmp_path / "kubeconfig")
    result = kubectl("get", "pods", stdin="from stdin")
    assert result.stdout == f"{tmp_path / 'kubeconfig'} get pods\nfrom stdin"


def test_failure_names_command_exit_code_and_stderr(tmp_path: Path) -> None:
    binary = _fake_kubectl(tmp_path, 'echo "no such resource" >&2; exit 3\n')
    kubectl = Kubectl(binary, tmp_path / "kubeconfig")
    with pytest.raises(KubectlError, match=r"kubectl get foo exited 3: no such resource"):
        kubectl("get", "foo")
    assert kubectl("get", "foo", check=False).returncode == 3
