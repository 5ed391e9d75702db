"""The demo's and `cluster up`'s hints name a kinfer the user's shell can run."""

from __future__ import annotations

import sys

from kinfer_dev.localcluster.cli import kinfer_command


def _script(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_venv_kinfer_not_on_path_is_named_relative_to_the_checkout(tmp_path, monkeypatch):
    script = _script(tmp_path / ".venv" / "bin" / "kinfer")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "cluster", "demo"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert kinfer_command() == ".venv/bin/kinfer"


def test_outside_the_checkout_the_path_is_absolute(tmp_path, monkeypatch):
    script = _script(tmp_path / "venv" / "bin" / "kinfer")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert kinfer_command() == str(script)


def test_the_kinfer_on_path_is_just_kinfer(tmp_path, monkeypatch):
    script = _script(tmp_path / "bin" / "kinfer")
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin")
    assert kinfer_command() == "kinfer"
