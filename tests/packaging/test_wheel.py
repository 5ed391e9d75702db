"""The operator's wheel carries the operator and nothing else; kinfer-dev carries the tooling.

Both wheels are built from a copy of the sources (building in place would leave build/
and egg-info in the checkout), without build isolation: no index is asked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from tests.conftest import REPO

# The operator's run-time modules: what `kinfer run` and the handlers import.
OPERATOR_FILES = (
    "kinfer/cli.py",
    "kinfer/config.py",
    "kinfer/capacity.py",
    "kinfer/api/schema.py",
    "kinfer/api/model.py",
    "kinfer/render/deployment.py",
    "kinfer/controller/cli.py",
    "kinfer/controller/handlers.py",
    "kinfer/controller/control_loop.py",
    "kinfer/controller/scheduler.py",
    "kinfer/autoscale/policy.py",
    "kinfer/autoscale/metrics.py",
    "kinfer/autoscale/observation.py",
    "kinfer/tiers/policy.py",
    "kinfer/tiers/actuator.py",
    "kinfer/runtime/switch.py",
)
# Words that name developer tooling; none may appear in the operator's wheel.
TOOLING = ("localcluster", "simulator", "bench", "baselines", "plots", "bounds", "traces")
TOOLING_DEPENDENCIES = {"cryptography", "matplotlib", "onnx", "onnxruntime", "nvidia-pytriton"}
GO_MODULES = ("coredns", "kind", "kubernetes", "kwok", "prometheus", "rclone")


def _build(source: Path, out: Path) -> zipfile.ZipFile:
    out.mkdir()
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    command += ["--no-build-isolation", "--no-index", "--wheel-dir", str(out), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sources")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, root / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(REPO / "operator", root / "operator", ignore=ignore)
    return root


@pytest.fixture(scope="module")
def kinfer_wheel(sources: Path) -> zipfile.ZipFile:
    return _build(sources, sources.parent / "kinfer-wheel")


@pytest.fixture(scope="module")
def dev_wheel(sources: Path) -> zipfile.ZipFile:
    return _build(sources / "operator" / "dev", sources.parent / "kinfer-dev-wheel")


def _metadata(wheel: zipfile.ZipFile, only_extra: str | None = None) -> tuple[str, list[str]]:
    """The distribution's name and its Requires-Dist names (every extra's included, or only
    those of `only_extra`)."""
    (path,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    message = Parser().parsestr(wheel.read(path).decode())
    lines = message.get_all("Requires-Dist", [])
    if only_extra is not None:
        lines = [line for line in lines if f'extra == "{only_extra}"' in line]
    names = [re.split(r"[\s\[<>=!~;(]", line, maxsplit=1)[0].lower() for line in lines]
    return message["Name"], names


def test_the_operator_wheel_carries_the_operator(kinfer_wheel: zipfile.ZipFile) -> None:
    names = kinfer_wheel.namelist()
    missing = [path for path in OPERATOR_FILES if path not in names]
    assert not missing, f"the operator's wheel lacks {missing}"
    assert {name.split("/")[0] for name in names} == {"kinfer", "kinfer-0.1.0.dist-info"}
    entry_points = kinfer_wheel.read("kinfer-0.1.0.dist-info/entry_points.txt").decode()
    assert "kinfer = kinfer.cli:main" in entry_points


def test_the_operator_wheel_carries_no_developer_tooling(kinfer_wheel: zipfile.ZipFile) -> None:
    names = kinfer_wheel.namelist()
    tooling = [n for n in names if any(word in n for word in TOOLING)]
    assert not tooling, f"developer tooling in the operator's wheel: {tooling}"
    go = [n for n in names if n.endswith((".go", "go.mod", "go.sum"))]
    assert not go, f"Go modules in the operator's wheel: {go}"
    data = [n for n in names if not n.endswith(".py") and ".dist-info/" not in n]
    assert not data, f"data files in the operator's wheel: {data}"


def test_the_operator_wheel_requires_none_of_the_tooling_dependencies(
    kinfer_wheel: zipfile.ZipFile,
) -> None:
    name, requires = _metadata(kinfer_wheel)
    assert name == "kinfer"
    assert {"kopf", "kubernetes", "tritonclient", "jsonschema"} <= set(requires)
    # `kinfer plot`'s matplotlib is an extra of its own (pip install 'kinfer[plot]'), never
    # installed with the operator.
    _, plot_extra = _metadata(kinfer_wheel, only_extra="plot")
    assert plot_extra == ["matplotlib"], plot_extra
    requires = [dep for dep in requires if dep not in plot_extra]
    assert not TOOLING_DEPENDENCIES & set(requires), requires


def test_kinfer_dev_carries_the_tooling_and_its_data(dev_wheel: zipfile.ZipFile) -> None:
    names = set(dev_wheel.namelist())
    expected = {
        "kinfer_dev/cli.py",
        "kinfer_dev/localcluster/cluster.py",
        "kinfer_dev/localcluster/kwok-stages.yaml",
        "kinfer_dev/localcluster/prometheus/scrape-config.yaml",
        "kinfer_dev/autoscale/simulator.py",
        "kinfer_dev/autoscale/bench.py",
        "kinfer_dev/autoscale/traces/spike.csv",
        "kinfer_dev/runtime/bench.py",
        "kinfer_dev/runtime/local_triton.py",
    }
    # `kinfer cluster build` (and `--set kind`) builds from these, read as package data.
    for module in GO_MODULES:
        expected |= {
            f"kinfer_dev/localcluster/go/{module}/{file}"
            for file in ("go.mod", "go.sum", "tools.go")
        }
    assert not expected - names, sorted(expected - names)
    assert not [n for n in names if n.startswith("kinfer/")], "kinfer-dev must not carry kinfer"
    name, requires = _metadata(dev_wheel)
    assert name == "kinfer-dev"
    assert {"kinfer", "cryptography", "matplotlib"} <= set(requires)


def test_the_operator_imports_nothing_of_kinfer_dev() -> None:
    """Every kinfer module imports with kinfer-dev absent; `kinfer cluster` and `kinfer
    bench` then say what to install and exit 2."""
    script = textwrap.dedent(
        """
        import contextlib, importlib, io, pkgutil, sys
        sys.modules["kinfer_dev"] = None  # as if kinfer-dev were not installed
        import kinfer
        for module in pkgutil.walk_packages(kinfer.__path__, "kinfer."):
            if not module.name.endswith("__main__"):  # it would run the command
                importlib.import_module(module.name)
        from kinfer.cli import main
        for argv in (["cluster", "up"], ["cluster", "--help"], ["bench", "autoscale", "--all"]):
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr):
                code = main(argv)
            print(code, stderr.getvalue().strip())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout
    for line, command in zip(lines, ("cluster", "cluster", "bench"), strict=True):
        assert line == (
            f"2 kinfer {command}: the developer tooling is not installed: "
            "pip install -e operator/dev (or make install)"
        )


def _license_metadata(wheel: zipfile.ZipFile) -> tuple[str, list[str]]:
    """The distribution's License-Expression and License-File entries (PEP 639)."""
    (path,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    message = Parser().parsestr(wheel.read(path).decode())
    return message["License-Expression"], message.get_all("License-File", [])


@pytest.mark.parametrize("which", ["kinfer", "kinfer-dev"])
def test_both_wheels_carry_the_apache_license(
    which: str, kinfer_wheel: zipfile.ZipFile, dev_wheel: zipfile.ZipFile
) -> None:
    wheel = kinfer_wheel if which == "kinfer" else dev_wheel
    expression, files = _license_metadata(wheel)
    assert (expression, files) == ("Apache-2.0", ["LICENSE"])
    dist_info = f"{which.replace('-', '_')}-0.1.0.dist-info"
    carried = wheel.read(f"{dist_info}/licenses/LICENSE").decode()
    assert carried == (REPO / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in carried


def test_the_sdist_carries_the_license(sources: Path, tmp_path: Path) -> None:
    # setuptools' PEP 517 hook, as `python -m build --sdist` calls it; no index is asked.
    # On a copy: the build leaves egg-info behind.
    source = shutil.copytree(sources, tmp_path / "source")
    out = tmp_path / "dist"
    script = f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=source
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with tarfile.open(out / done.stdout.strip().splitlines()[-1]) as sdist:
        license_file = sdist.extractfile("kinfer-0.1.0/LICENSE")
        assert license_file is not None
        assert license_file.read().decode() == (REPO / "LICENSE").read_text()
        pkg_info = sdist.extractfile("kinfer-0.1.0/PKG-INFO")
        assert pkg_info is not None
        headers = Parser().parsestr(pkg_info.read().decode())
    assert headers["License-Expression"] == "Apache-2.0"
    assert headers.get_all("License-File") == ["LICENSE"]
