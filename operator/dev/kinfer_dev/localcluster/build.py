"""Builds the clusters' binaries from the pinned Go modules into a cache outside the repo, once.

`BINARIES` run the local cluster; `KIND_BINARIES` go into the kind node image and
its cluster (kubelet, kubeadm, kube-proxy, CoreDNS, crictl, Prometheus) or drive it
(kind). Kubernetes binaries carry their release version (`kubectl version` and
kubeadm read it), taken from the pinned go.mod. `TOOLS` (helm) are built on demand
by the tests that use them, each into a folder keyed by its own module, so adding or
bumping a tool never rebuilds the clusters' binaries.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TextIO


@dataclass(frozen=True)
class Binary:
    """One binary: its name in the cache, its Go module (a folder of go/) and package."""

    name: str
    module: str
    package: str
    tags: str = ""  # Go build tags
    # A Go variable stamped with the version go.mod pins of `version_of` (`helm version`).
    version_var: str = ""
    version_of: str = ""

    @property
    def is_kubernetes(self) -> bool:
        return self.package.startswith("k8s.io/kubernetes/")


BINARIES: tuple[Binary, ...] = (
    Binary("etcd", "kubernetes", "go.etcd.io/etcd/server/v3"),
    Binary("kube-apiserver", "kubernetes", "k8s.io/kubernetes/cmd/kube-apiserver"),
    Binary(
        "kube-controller-manager", "kubernetes", "k8s.io/kubernetes/cmd/kube-controller-manager"
    ),
    Binary("kube-scheduler", "kubernetes", "k8s.io/kubernetes/cmd/kube-scheduler"),
    Binary("kubectl", "kubernetes", "k8s.io/kubernetes/cmd/kubectl"),
    Binary("kwok", "kwok", "sigs.k8s.io/kwok/cmd/kwok"),
    # The pods' model fetch (the pod runner runs their rclone commands): Debian's 1.60
    # lacks --http-no-escape, which a model URL with a query needs.
    Binary("rclone", "rclone", "github.com/rclone/rclone"),
)
KIND_BINARIES: tuple[Binary, ...] = (
    *BINARIES,
    Binary("kubelet", "kubernetes", "k8s.io/kubernetes/cmd/kubelet"),
    Binary("kubeadm", "kubernetes", "k8s.io/kubernetes/cmd/kubeadm"),
    Binary("kube-proxy", "kubernetes", "k8s.io/kubernetes/cmd/kube-proxy"),
    Binary("kind", "kind", "sigs.k8s.io/kind"),
    Binary("coredns", "coredns", "github.com/coredns/coredns"),
    Binary("crictl", "kind", "sigs.k8s.io/cri-tools/cmd/crictl"),
    # Only Kubernetes service discovery (the cloud providers' SDKs would triple the build).
    Binary(
        "prometheus",
        "prometheus",
        "github.com/prometheus/prometheus/cmd/prometheus",
        tags="remove_all_sd,enable_kubernetes_sd",
    ),
)
# The chart's tests render, lint, install and uninstall manifests/helm/kinfer/ with it.
HELM = Binary(
    "helm",
    "helm",
    "helm.sh/helm/v4/cmd/helm",
    version_var="helm.sh/helm/v4/internal/version.version",
    version_of="helm.sh/helm/v4",
)
TOOLS: tuple[Binary, ...] = (HELM,)
BINARY_SETS = {"local": BINARIES, "kind": KIND_BINARIES, "helm": (HELM,)}
# Bumped when how a binary is built changes (flags), so the cache folder changes too.
BUILD_RECIPE = "2"
PROGRESS_EVERY_S = 10.0


class BuildError(RuntimeError):
    """A binary failed to build; the message carries the tail of Go's output."""


def modules_dir() -> Path:
    """The go/ folder shipped in kinfer-dev (go.mod, go.sum, tools.go per module)."""
    return Path(str(resources.files("kinfer_dev.localcluster") / "go"))


def go_executable() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the `go` command is not on PATH; kinfer's local cluster builds its binaries with Go "
            ">= 1.26 (install it, e.g. apt-get install golang, or from go.dev)"
        )
    return go


def key_modules(binaries: tuple[Binary, ...] = BINARIES) -> set[str]:
    """The modules whose pins name the binaries' cache folder: every cluster module for the
    clusters' binaries (one folder), a tool's own module for a tool."""
    tools = {tool.module for tool in TOOLS}
    if any(b.module in tools for b in binaries):
        return {b.module for b in binaries}
    return {b.module for b in KIND_BINARIES} | {b.module for b in binaries}


def cache_key(modules: Path | None = None, names: set[str] | None = None) -> str:
    """A digest of the pinned go.mod/go.sum of `names` (default: the clusters' modules): a
    version bump lands in a new cache folder."""
    modules = modules or modules_dir()
    names = key_modules() if names is None else names
    digest = hashlib.sha256(BUILD_RECIPE.encode())
    for path in sorted(modules.glob("*/go.*")):
        if path.parent.name not in names:
            continue
        digest.update(path.relative_to(modules).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def bin_dir(cache_dir: Path, binaries: tuple[Binary, ...] = BINARIES) -> Path:
    return cache_dir / "bin" / cache_key(names=key_modules(binaries))


def missing(cache_dir: Path, binaries: tuple[Binary, ...] = BINARIES) -> list[Binary]:
    directory = bin_dir(cache_dir, binaries)
    return [b for b in binaries if not (directory / b.name).is_file()]


def module_version(module: str, path: str) -> str:
    """The version a shipped go.mod requires of `path` (e.g. k8s.io/kubernetes -> v1.37.2)."""
    text = (modules_dir() / module / "go.mod").read_text()
    found = re.search(rf"^\s*(?:require\s+)?{re.escape(path)} (v\S+)", text, re.MULTILINE)
    if found is None:
        raise BuildError(f"go/{module}/go.mod does not require {path}")
    return found.group(1)


def version_ldflags(binary: Binary) -> list[str]:
    """`-ldflags` stamping a Kubernetes binary with its release version (else v0.0.0-master),
    or a binary's `version_var` with its module's."""
    if binary.version_var:
        version = module_version(binary.module, binary.version_of)
        return [f"-ldflags=-X {binary.version_var}={version}"]
    if not binary.is_kubernetes:
        return []
    version = module_version(binary.module, "k8s.io/kubernetes")
    major, minor = version.removeprefix("v").split(".")[:2]
    base = "k8s.io/component-base/version"
    flags = {"gitVersion": version, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
    return ["-ldflags=" + " ".join(f"-X {base}.{key}={value}" for key, value in flags.items())]


def _count_packages(stream: TextIO, counter: list[int], tail: list[str]) -> None:
    """Count the packages `go build -v` names as it compiles them; keep the output's tail."""
    for line in stream:
        tail.append(line.rstrip())
        del tail[:-40]
        if line.strip() and not line.startswith(("go: ", "#")) and " " not in line.strip():
            counter[0] += 1


def build_binary(binary: Binary, directory: Path, out: TextIO = sys.stderr) -> Path:
    """`go build -v` one binary into the cache, written under a temporary name then renamed."""
    target = directory / binary.name
    partial = directory / f".{binary.name}.partial"
    module_dir = modules_dir() / binary.module
    started = time.monotonic()
    print(f"building {binary.name} ({binary.package}) ...", file=out, flush=True)
    # `-mod=readonly`: the pinned go.sum is the truth; never rewrite the shipped module files.
    # `-buildvcs=false`: the modules sit inside kinfer's checkout, whose git state
    # says nothing about these binaries.
    command = [go_executable(), "build", "-v", "-mod=readonly", "-buildvcs=false"]
    command += version_ldflags(binary) + ([f"-tags={binary.tags}"] if binary.tags else [])
    command += ["-o", str(partial), binary.package]
    process = subprocess.Popen(
        command,
        cwd=module_dir,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    tail: list[str] = []
    packages = [0]
    assert process.stdout is not None
    reader = threading.Thread(
        target=_count_packages, args=(process.stdout, packages, tail), daemon=True
    )
    reader.start()
    # A tick whether or not Go prints: linking a big binary is silent for a while.
    while True:
        try:
            code = process.wait(timeout=PROGRESS_EVERY_S)
            break
        except subprocess.TimeoutExpired:
            done = f"{packages[0]} packages compiled" if packages[0] else "linking cached packages"
            print(
                f"  ... {binary.name}: {done}, {int(time.monotonic() - started)}s elapsed",
                file=out,
                flush=True,
            )
    reader.join(timeout=5)
    if code != 0:
        raise BuildError(
            f"go build of {binary.package} (module {module_dir}) failed with exit code {code}:\n"
            + "\n".join(tail[-20:])
        )
    partial.rename(target)
    print(f"built {binary.name} in {time.monotonic() - started:.0f}s", file=out, flush=True)
    return target


def ensure_built(
    cache_dir: Path, out: TextIO = sys.stderr, binaries: tuple[Binary, ...] = BINARIES
) -> Path:
    """Build what is missing (idempotent; a lock keeps builds from racing); return the dir."""
    directory = bin_dir(cache_dir, binaries)
    directory.mkdir(parents=True, exist_ok=True)
    todo = missing(cache_dir, binaries)
    if not todo:
        return directory
    started = time.monotonic()
    print(
        f"building {len(todo)} binaries into {directory} (the first build takes several minutes "
        "on 2 cores; Go's build cache makes later ones fast)",
        file=out,
        flush=True,
    )
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for binary in missing(cache_dir, binaries):
            build_binary(binary, directory, out)
    print(f"all binaries built in {time.monotonic() - started:.0f}s", file=out, flush=True)
    return directory
