"""Each model source fetched for real: the rendered pod goes through the pod runner's plan and
its fetch runs with the real rclone (the version the storage-initializer image builds) against
real servers on 127.0.0.1: `rclone serve s3` (the S3 protocol, with an access key; plain and
TLS with a self-signed CA), and an HTTP server with a Hugging Face repository's file layout
(resolve/<revision>/<path>, a bearer token) standing in for the hub, which is not reachable
here. Archives are unpacked by rclone, and one that climbs out with '..' is refused."""

from __future__ import annotations

import datetime
import io
import ipaddress
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kinfer.api.model import parse
from kinfer.config import Images, RenderOptions
from kinfer.render import render
from kinfer_dev.localcluster import build, podplan
from kinfer_dev.localcluster.config import cache_dir_default
from kinfer_dev.localcluster.container_env import container_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # a cold rclone build: minutes

MODEL = b"the model's bytes"
ACCESS_KEY, SECRET_KEY = "kinfer-test", "s3cr3t-for-the-test"
SECRETS = {
    "creds": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
    "wrong": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": "not-the-key"},
    "hf": {"HF_TOKEN": "hf_test_token"},
}
START_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def rclone() -> Path:
    [binary] = [b for b in build.BINARIES if b.name == "rclone"]
    return build.ensure_built(cache_dir_default(), sys.stderr, (binary,)) / "rclone"


def tar_gz(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return out.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def self_signed(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.crt, tls.crt, tls.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kinfer test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.crt", directory / "tls.crt", directory / "tls.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def serve_s3(rclone: Path, root: Path, log: Path, tls: tuple[Path, Path] | None) -> Iterator[str]:
    """`rclone serve s3` on 127.0.0.1 (a port it picks), until the generator is closed."""
    args = [str(rclone), "serve", "s3", str(root), "--addr=127.0.0.1:0"]
    args += [f"--auth-key={ACCESS_KEY},{SECRET_KEY}", "-v"]
    if tls:
        args += [f"--cert={tls[0]}", f"--key={tls[1]}"]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(log.parent)}
    with open(log, "wb") as out:
        server = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and server.poll() is None:
            found = re.search(r"(https?://127\.0\.0\.1:\d+)/", log.read_text(errors="replace"))
            if found:
                yield found.group(1)
                return
            time.sleep(0.2)
        pytest.fail(f"rclone serve s3 did not start: {log.read_text(errors='replace')}")
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def bucket_root(tmp_path: Path) -> Path:
    root = tmp_path / "s3"
    (root / "models" / "mlp").mkdir(parents=True)
    (root / "models" / "mlp" / "model.onnx").write_bytes(MODEL)
    (root / "models" / "mlp.tar.gz").write_bytes(tar_gz({"./model.onnx": MODEL}))
    (root / "models" / "mlp.zip").write_bytes(zipped({"model.onnx": MODEL}))
    (root / "models" / "evil.tar.gz").write_bytes(tar_gz({"../../escaped": b"x"}))
    odd = tar_gz({"model.onnx": MODEL, "/abs/x": b"abs"}, {"link": "/etc/hostname"})
    (root / "models" / "odd.tar.gz").write_bytes(odd)
    return root


@pytest.fixture
def s3_url(rclone: Path, bucket_root: Path, tmp_path: Path) -> Iterator[str]:
    yield from serve_s3(rclone, bucket_root, tmp_path / "serve-s3.log", None)


@pytest.fixture
def s3_tls(rclone: Path, bucket_root: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, cert, key = self_signed(certs)
    for url in serve_s3(rclone, bucket_root, tmp_path / "serve-s3-tls.log", (cert, key)):
        yield url, ca


def pod(model: dict[str, Any], hf_endpoint: str = "http://127.0.0.1:9") -> dict[str, Any]:
    obj = {
        "apiVersion": "kinfer.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "mlp", "namespace": "ns"},
        "spec": {"runtime": "onnxruntime", "model": model},
    }
    options = RenderOptions(
        images=Images(storage_initializer="rclone:test"), hf_endpoint=hf_endpoint
    )
    [deployment] = [o for o in render(parse(obj), options) if o["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    return {
        "metadata": {**template["metadata"], "namespace": "ns", "name": "mlp-0", "uid": "u" * 16},
        "spec": template["spec"],
        "status": {"podIP": "127.0.0.5"},
    }


# Appended where a fetch is meant to fail: the refusal at once, not after rclone's retries.
NO_RETRIES = ("--retries=1", "--low-level-retries=1")


def fetch(
    rclone: Path,
    pod: dict[str, Any],
    state: Path,
    configmaps: dict[str, dict[str, str]] | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """What the pod runner does for the pod's one fetch; (rclone's result, version dir)."""
    configmaps = configmaps or {}
    plan = podplan.plan_pod(pod, state)
    for name, directory in plan.configmap_volumes.items():
        directory.mkdir(parents=True, exist_ok=True)
        for key, value in configmaps.get(name, {}).items():
            (directory / key).write_text(value)
    (plan.work_dir / "volumes" / "tmp").mkdir(parents=True, exist_ok=True)
    [step] = plan.fetches
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(plan.work_dir)}
    env |= step.env | container_env("ns", step.env_from, step.env_entries, SECRETS.get)
    done = subprocess.run(
        [str(rclone), *step.argv[1:], *extra], env=env, capture_output=True, text=True, timeout=300
    )
    return done, plan.model_repository / "mlp" / "1"


@pytest.mark.parametrize(
    "uri", ["s3://models/mlp/", "s3://models/mlp/model.onnx", "s3://models/mlp.tar.gz"]
)
def test_s3_with_the_storage_secret(rclone: Path, s3_url: str, tmp_path: Path, uri: str) -> None:
    model = {"storageUri": uri, "storageSecretName": "creds", "s3": {"endpoint": s3_url}}
    done, version = fetch(rclone, pod(model), tmp_path / "state")
    assert done.returncode == 0, done.stderr
    assert (version / "model.onnx").read_bytes() == MODEL


def test_s3_with_a_wrong_key_fails_naming_the_refusal(
    rclone: Path, s3_url: str, tmp_path: Path
) -> None:
    model = {"storageUri": "s3://models/mlp/", "storageSecretName": "wrong"}
    obj = pod({**model, "s3": {"endpoint": s3_url}})
    done, version = fetch(rclone, obj, tmp_path / "s", extra=NO_RETRIES)
    assert done.returncode != 0
    assert "SignatureDoesNotMatch" in done.stderr or "AccessDenied" in done.stderr, done.stderr
    assert not (version / "model.onnx").exists()


def test_s3_over_tls_trusts_the_ca_bundle_and_only_it(
    rclone: Path, s3_tls: tuple[str, Path], tmp_path: Path
) -> None:
    url, ca = s3_tls
    s3 = {"endpoint": url, "caBundleConfigMap": "store-ca"}
    model = {"storageUri": "s3://models/mlp.zip", "storageSecretName": "creds", "s3": s3}
    configmaps = {"store-ca": {"ca.crt": ca.read_text()}}
    done, version = fetch(rclone, pod(model), tmp_path / "with-ca", configmaps)
    assert done.returncode == 0, done.stderr
    assert (version / "model.onnx").read_bytes() == MODEL

    without = {**model, "s3": {"endpoint": url}}
    done, version = fetch(rclone, pod(without), tmp_path / "without-ca", extra=NO_RETRIES)
    assert done.returncode != 0
    assert "certificate" in done.stderr, done.stderr


def test_an_archive_member_with_dot_dot_is_refused(
    rclone: Path, s3_url: str, tmp_path: Path
) -> None:
    model = {"storageUri": "s3://models/evil.tar.gz", "storageSecretName": "creds"}
    obj = pod({**model, "s3": {"endpoint": s3_url}})
    done, _ = fetch(rclone, obj, tmp_path / "state", extra=NO_RETRIES)
    assert done.returncode != 0
    assert "refusing to extract archive entry" in done.stderr, done.stderr
    assert not list(tmp_path.rglob("escaped"))


def test_absolute_members_and_links_stay_inside_the_version(
    rclone: Path, s3_url: str, tmp_path: Path
) -> None:
    model = {"storageUri": "s3://models/odd.tar.gz", "storageSecretName": "creds"}
    done, version = fetch(rclone, pod({**model, "s3": {"endpoint": s3_url}}), tmp_path / "st")
    assert done.returncode == 0, done.stderr
    assert (version / "abs" / "x").read_bytes() == b"abs"
    link = version / "link"
    assert not link.is_symlink() and link.read_bytes() == b""


@pytest.fixture
def hub() -> Iterator[str]:
    """A Hugging Face-compatible file layout: GET /<org>/<repo>/resolve/<revision>/<path>,
    private (a bearer token), as huggingface_hub downloads a file."""
    files = {
        "/kinfer-dev/mlp/resolve/main/onnx/model.onnx": MODEL,
        "/kinfer-dev/mlp/resolve/v1/mlp.tar.gz": tar_gz({"model.onnx": MODEL}),
    }

    class Hub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            authorized = self.headers.get("Authorization") == "Bearer hf_test_token"
            body = files.get(self.path) if authorized else None
            self.send_response(200 if body is not None else (404 if authorized else 401))
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body or b"")

        do_HEAD = do_GET

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize(
    "uri", ["hf://kinfer-dev/mlp/onnx/model.onnx", "hf://kinfer-dev/mlp@v1/mlp.tar.gz"]
)
def test_hf_with_the_token_from_the_secret(
    rclone: Path, hub: str, tmp_path: Path, uri: str
) -> None:
    done, version = fetch(
        rclone, pod({"storageUri": uri, "storageSecretName": "hf"}, hub), tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert (version / "model.onnx").read_bytes() == MODEL


def test_hf_without_a_token_is_refused_by_the_hub(rclone: Path, hub: str, tmp_path: Path) -> None:
    done, version = fetch(
        rclone,
        pod({"storageUri": "hf://kinfer-dev/mlp/onnx/model.onnx"}, hub),
        tmp_path,
        extra=NO_RETRIES,
    )
    assert done.returncode != 0
    assert "401" in done.stderr, done.stderr
    assert not (version / "model.onnx").exists()
