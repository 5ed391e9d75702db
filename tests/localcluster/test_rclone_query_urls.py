"""A model URL with a query (a presigned S3 or GCS URL, an Azure SAS) reaches the store as
written. The fetch container's own rclone command runs with the real rclone (the one the local
cluster builds from its pinned Go module, the version the storage-initializer image builds)
against an HTTP server on 127.0.0.1 that, like S3 for a URL presigned for GET, serves the model
only to a GET carrying the query unescaped and refuses a HEAD."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kinfer.api import constants as c
from kinfer.api.model import parse
from kinfer.config import Images, RenderOptions
from kinfer.render import render
from kinfer.render.storage import HTTP_QUERY_FLAGS
from kinfer_dev.localcluster import build
from kinfer_dev.localcluster.config import cache_dir_default
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # a cold rclone build: minutes

SIGNED_PATH = "/models/mlp/model.onnx"
# '/' escaped as %2F, as a signature's base64 is: rclone would escape the '%' itself too.
QUERY = "X-Amz-Signature=abc%2Fdef&X-Amz-Expires=300&x=1"
MODEL = b"not really onnx, but the bytes the store holds"
DOCKERFILE = REPO / "runtime_images" / "storage-initializer" / "Dockerfile"


@dataclass
class Store:
    url: str
    requests: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
def store() -> Iterator[Store]:
    seen: list[tuple[str, str]] = []

    class PresignedObject(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(("GET", self.path))
            self._answer(MODEL if self.path == f"{SIGNED_PATH}?{QUERY}" else None)

        def do_HEAD(self) -> None:
            # S3: the signature covers the method, and this URL was signed for GET.
            seen.append(("HEAD", self.path))
            self._answer(None)

        def _answer(self, body: bytes | None) -> None:
            self.send_response(200 if body is not None else 403)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            if body is not None and self.command == "GET":
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), PresignedObject)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Store(f"http://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def rclone() -> Path:
    """The local cluster's rclone (built once into its cache, as `kinfer cluster build` does)."""
    [binary] = [b for b in build.BINARIES if b.name == "rclone"]
    return build.ensure_built(cache_dir_default(), sys.stderr, (binary,)) / "rclone"


def fetch_container(storage_uri: str) -> dict[str, Any]:
    obj = {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": "mlp", "namespace": "default"},
        "spec": {"runtime": "onnxruntime", "model": {"storageUri": storage_uri}},
    }
    options = RenderOptions(images=Images(storage_initializer="rclone:test"))
    [deployment] = [o for o in render(parse(obj), options) if o["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["initContainers"]
    return container


def run_fetch(
    rclone: Path, container: dict[str, Any], root: Path, without: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The container's command and environment, its volumes (the model repository, /tmp)
    under `root`; `without` leaves one argument out."""
    volumes = {c.MODEL_REPOSITORY_PATH: root / "models", "/tmp": root / "tmp"}
    for directory in volumes.values():
        directory.mkdir(parents=True, exist_ok=True)

    def local(value: str) -> str:
        for mount, directory in volumes.items():
            if value == mount or value.startswith(mount + "/"):
                return str(directory) + value[len(mount) :]
        return value

    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(volumes["/tmp"])}
    env |= {e["name"]: local(e["value"]) for e in container["env"] if "value" in e}
    args = [local(arg) for arg in container["args"] if arg != without]
    return subprocess.run(
        [str(rclone), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def fetched(root: Path) -> Path:
    return root / "models" / "mlp" / "1" / "model.onnx"


def test_the_fetch_of_a_url_with_a_query_sends_it_as_written(
    rclone: Path, store: Store, tmp_path: Path
) -> None:
    container = fetch_container(f"{store.url}{SIGNED_PATH}?{QUERY}")
    assert [a for a in container["args"] if a in HTTP_QUERY_FLAGS] == list(HTTP_QUERY_FLAGS)

    done = run_fetch(rclone, container, tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    assert fetched(tmp_path).read_bytes() == MODEL
    # One request, the signed one: a GET with the query exactly as it was given.
    assert store.requests == [("GET", f"{SIGNED_PATH}?{QUERY}")]


@pytest.mark.parametrize("flag", HTTP_QUERY_FLAGS)
def test_without_either_flag_the_store_refuses_the_fetch(
    rclone: Path, store: Store, tmp_path: Path, flag: str
) -> None:
    """Each flag is needed: the test above fails when the renderer drops either."""
    container = fetch_container(f"{store.url}{SIGNED_PATH}?{QUERY}")

    done = run_fetch(rclone, container, tmp_path, without=flag)

    assert done.returncode != 0, done.stdout + done.stderr
    assert "403 Forbidden" in done.stdout + done.stderr
    assert not fetched(tmp_path).exists()
    if flag == "--http-no-escape":
        # rclone escaped the query into the path: '?' as %3F, the signature's '%' as %25.
        assert store.requests
        assert all("%3FX-Amz-Signature=abc%252Fdef" in target for _, target in store.requests)
    else:
        # rclone stats the file with a HEAD first, which the store refuses: no GET follows.
        assert ("HEAD", f"{SIGNED_PATH}?{QUERY}") in store.requests
        assert not [target for method, target in store.requests if method == "GET"]


def test_a_url_without_a_query_gets_neither_flag() -> None:
    container = fetch_container(f"http://127.0.0.1:9{SIGNED_PATH}")
    assert not set(HTTP_QUERY_FLAGS) & set(container["args"])


def test_the_image_builds_the_rclone_the_local_cluster_pins() -> None:
    pinned = build.module_version("rclone", "github.com/rclone/rclone")
    found = re.search(r"^ARG RCLONE_VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert found is not None, f"{DOCKERFILE} sets no RCLONE_VERSION"
    assert found.group(1) == pinned


def test_the_pod_runner_runs_the_cluster_s_own_rclone(tmp_path: Path) -> None:
    from kinfer_dev.localcluster.cluster import STATE_FILE
    from kinfer_dev.localcluster.runner import rclone_binary

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / STATE_FILE).write_text(json.dumps({"bin_dir": str(bin_dir)}))
    assert rclone_binary(tmp_path) == shutil.which("rclone")  # not built: the one on PATH
    (bin_dir / "rclone").write_bytes(b"")
    assert rclone_binary(tmp_path) == str(bin_dir / "rclone")
