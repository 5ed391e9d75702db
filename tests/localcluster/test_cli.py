"""`kinfer cluster` command line: subcommands and their answers without a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from kinfer.cli import main


def test_cluster_registers_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["cluster", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("up", "down", "status", "kubeconfig", "build", "demo"):
        assert command in out


def test_status_and_kubeconfig_without_a_cluster_say_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "none")
    assert main(["cluster", "status", "--state-dir", state]) == 3
    assert "kinfer cluster up" in capsys.readouterr().out
    assert main(["cluster", "kubeconfig", "--state-dir", state]) == 1
    assert "kinfer cluster up" in capsys.readouterr().err


def test_down_without_a_cluster_is_harmless(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cluster", "down", "--state-dir", str(tmp_path / "none")]) == 0
    assert "no local cluster" in capsys.readouterr().out


def test_up_rejects_a_non_loopback_pod_cidr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before anything starts: nothing ever listens on or dials this range.
    code = main(
        ["cluster", "up", "--state-dir", str(tmp_path / "s"), "--pod-cidr", "10.244.0.0/16"]
    )
    assert code == 1
    assert "127.0.0.0/8" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
