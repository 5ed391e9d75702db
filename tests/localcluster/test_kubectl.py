"""The kubectl wrapper the demo and the e2e harness share."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kinfer_dev.localcluster.kubectl import Kubectl, KubectlError


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


def _pod(ip: str) -> dict:
    return {"metadata": {"name": "p", "namespace": "ns"}, "status": {"podIP": ip}}


def test_a_local_pod_is_dialled_on_its_loopback_ip(tmp_path: Path) -> None:
    kubectl = Kubectl(_fake_kubectl(tmp_path, "exit 1\n"), tmp_path / "kubeconfig")
    with kubectl.pod_endpoints(_pod("127.0.10.7")) as endpoints:
        assert endpoints == ("127.0.10.7:8000", "127.0.10.7:8001")


def test_a_remote_pod_is_reached_through_port_forward(tmp_path: Path) -> None:
    # What `kubectl port-forward pod/p :8000 :8001` prints, then it keeps running.
    body = (
        'echo "$*" > "$(dirname "$0")/args"\n'
        'echo "Forwarding from 127.0.0.1:41001 -> 8000"\n'
        'echo "Forwarding from 127.0.0.1:41002 -> 8001"\n'
        "exec sleep 60\n"
    )
    kubectl = Kubectl(_fake_kubectl(tmp_path, body), tmp_path / "kubeconfig")
    with kubectl.pod_endpoints(_pod("10.244.0.5")) as endpoints:
        assert endpoints == ("127.0.0.1:41001", "127.0.0.1:41002")
    assert (tmp_path / "args").read_text().split() == [
        "port-forward",
        "-n",
        "ns",
        "pod/p",
        ":8000",
        ":8001",
    ]


def test_a_port_forward_that_exits_is_an_error(tmp_path: Path) -> None:
    kubectl = Kubectl(_fake_kubectl(tmp_path, 'echo "pod not found" >&2; exit 1\n'), tmp_path / "k")
    endpoints = kubectl.pod_endpoints(_pod("10.244.0.5"), timeout_s=10)
    with pytest.raises(KubectlError, match="port-forward to pod p did not start"), endpoints:
        pass
