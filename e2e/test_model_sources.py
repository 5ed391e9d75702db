"""Model sources on a cluster: an InferenceService fetched from a real S3 server with the
credentials of spec.model.storageSecretName becomes Ready and answers, and the credentials
never reach the model server (its container spec; locally also the running server's
environment); a wrong key, a missing Secret and an archive reaching outside its folder each
give Ready=False naming the fetch's failure; a model on a PersistentVolumeClaim serves; an
hf:// file serves from a hub layout; on kind, an oci:// modelcar image serves.

The S3 server is `rclone serve s3` (the S3 protocol, with an access key): on the local
cluster the rclone it builds, on 127.0.0.1; on kind the storage-initializer image's rclone in
a pod of its own (kinfer-e2e/s3-store).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from e2e.harness import (
    STORE_NAMESPACE,
    Cluster,
    Models,
    Operator,
    condition_of,
    infer_both_protocols,
    load_sample,
    pod_endpoint,
    wait_for,
)
from kinfer_dev.runtime import testmodels

ACCESS_KEY, SECRET_KEY = "kinfer-e2e", "e2e-s3-secret-key"
START_TIMEOUT_S = 120


def s3_bucket(root: Path, models: Models) -> Path:
    """The bucket `models`: mlp/model.onnx and mlp.tar.gz (the fp32 test MLP)."""
    model = models.local(models.tiers["fp32"]).read_bytes()
    (root / "models" / "mlp").mkdir(parents=True)
    (root / "models" / "mlp" / "model.onnx").write_bytes(model)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo("model.onnx")
        info.size = len(model)
        tar.addfile(info, io.BytesIO(model))
    (root / "models" / "mlp.tar.gz").write_bytes(archive.getvalue())
    return root


def local_s3(rclone: Path, root: Path) -> Iterator[str]:
    log = root.parent / f"{root.name}-serve-s3.log"
    args = [str(rclone), "serve", "s3", str(root), "--addr=127.0.0.1:0", "-v"]
    args.append(f"--auth-key={ACCESS_KEY},{SECRET_KEY}")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(root.parent)}
    with open(log, "wb") as out:
        server = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        found = wait_for(
            "rclone serve s3 listening",
            lambda: (
                server.poll() is None
                and re.search(r"(http://127\.0\.0\.1:\d+)/", log.read_text(errors="replace"))
            ),
            START_TIMEOUT_S,
        )
        yield found.group(1)
    finally:
        server.terminate()
        server.wait(timeout=30)


def in_cluster_s3(cluster: Cluster, root: Path) -> Iterator[str]:
    """The storage-initializer image's rclone serving S3 in kinfer-e2e, the bucket copied in."""
    from kinfer.config import Images

    labels = {"app": "s3-store"}
    container = {
        "name": "s3",
        "image": Images().storage_initializer,
        "args": ["serve", "s3", "/data", "--addr=:9000", f"--auth-key={ACCESS_KEY},{SECRET_KEY}"],
        "ports": [{"name": "s3", "containerPort": 9000}],
        "readinessProbe": {"tcpSocket": {"port": "s3"}, "periodSeconds": 2},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    volumes = [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    meta = {"name": "s3-store", "namespace": STORE_NAMESPACE}
    cluster.apply(
        [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta,
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [container], "volumes": volumes},
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta,
                "spec": {"selector": labels, "ports": [{"name": "s3", "port": 9000}]},
            },
        ]
    )
    try:
        cluster.kubectl(
            "-n", STORE_NAMESPACE, "rollout", "status", "deployment/s3-store", "--timeout=300s",
            timeout_s=330,
        )  # fmt: skip
        [pod] = [
            p for p in cluster.items("pods", "-n", STORE_NAMESPACE, "-l", "app=s3-store")
            if not p["metadata"].get("deletionTimestamp")
        ]  # fmt: skip
        cluster.kubectl(
            "cp", f"{root}/.", f"{STORE_NAMESPACE}/{pod['metadata']['name']}:/data/",
            timeout_s=300,
        )  # fmt: skip
        yield f"http://s3-store.{STORE_NAMESPACE}.svc.cluster.local:9000"
    finally:
        cluster.kubectl("-n", STORE_NAMESPACE, "delete", "deployment,service", "s3-store",
                        "--wait=false", check=False)  # fmt: skip


@pytest.fixture(scope="module")
def s3_endpoint(
    cluster: Cluster, models: Models, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    root = s3_bucket(tmp_path_factory.mktemp("s3"), models)
    if not cluster.is_local:
        yield from in_cluster_s3(cluster, root)
        return
    from kinfer_dev.localcluster import build
    from kinfer_dev.localcluster.config import cache_dir_default

    [binary] = [b for b in build.BINARIES if b.name == "rclone"]
    rclone = build.ensure_built(cache_dir_default(), sys.stderr, (binary,)) / "rclone"
    yield from local_s3(rclone, root)


def create_secret(cluster: Cluster, namespace: str, name: str, secret_key: str) -> None:
    cluster.kubectl(
        "create", "secret", "generic", name, "-n", namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={ACCESS_KEY}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={secret_key}",
    )  # fmt: skip


def small(isvc: dict[str, Any]) -> dict[str, Any]:
    """A quarter CPU: the kind node's two CPUs hold these beside the rest."""
    isvc["spec"]["resources"] = {"cpu": "250m", "memory": "512Mi"}
    return isvc


def s3_isvc(
    namespace: str, models: Models, name: str, endpoint: str, secret: str, uri: str
) -> dict[str, Any]:
    isvc = small(load_sample("onnxruntime-cpu.yaml", namespace, models))
    isvc["metadata"]["name"] = name
    isvc["spec"]["model"] |= {
        "storageUri": uri,
        "storageSecretName": secret,
        "s3": {"endpoint": endpoint},
    }
    return isvc


def ready_condition(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return condition_of(cluster.get("kisvc", name, "-n", namespace), "Ready") or {}


def assert_serves(cluster: Cluster, pod: dict[str, Any], model: Path) -> None:
    """The pod answers over HTTP and gRPC as onnxruntime does with `model`."""
    batch = testmodels.sample_input(batch=2)
    with pod_endpoint(cluster, pod) as (http_url, grpc_url):
        http_out, grpc_out = infer_both_protocols(http_url, grpc_url, "mlp", batch)
    expected = testmodels.run_reference(model, batch)
    np.testing.assert_allclose(http_out, expected, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(grpc_out, expected, atol=1e-5, rtol=1e-4)


def fetch_failed(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """The service's Ready condition once it is False for a failed model fetch."""
    return wait_for(
        f"{name}: Ready=False naming the fetch's failure",
        lambda: (
            (c := ready_condition(cluster, namespace, name)).get("status") == "False"
            and c.get("reason") == "ModelFetchFailed"
            and c
        ),
        600,
    )


def server_environment(cluster: Cluster, pod: dict[str, Any]) -> dict[str, str]:
    """The running model server's environment (/proc/<pid>/environ of the pod runner's
    process for the pod's server container)."""
    from kinfer_dev.localcluster.podplan import work_dir_for
    from kinfer_dev.localcluster.runner import SERVER_RECORD

    assert cluster.state_dir is not None
    record = json.loads((work_dir_for(cluster.state_dir, pod) / SERVER_RECORD).read_text())
    raw = Path(f"/proc/{record['pid']}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_s3_with_the_storage_secret_serves_and_the_server_never_sees_the_keys(
    cluster: Cluster, operator: Operator, models: Models, namespace: str, s3_endpoint: str
) -> None:
    create_secret(cluster, namespace, "model-creds", SECRET_KEY)
    isvc = s3_isvc(
        namespace, models, "mlp-s3", s3_endpoint, "model-creds", "s3://models/mlp.tar.gz"
    )
    cluster.apply(isvc)
    cluster.wait_ready(namespace, "mlp-s3")

    [pod] = cluster.ready_pods(namespace, "mlp-s3")
    [fetch] = pod["spec"]["initContainers"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "model-creds"}}]
    [server] = pod["spec"]["containers"]
    assert "model-creds" not in json.dumps(server)
    if cluster.is_local:
        environment = server_environment(cluster, pod)
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(environment)
        assert SECRET_KEY not in "\0".join(environment.values())

    assert_serves(cluster, pod, models.local(models.tiers["fp32"]))


def test_a_wrong_key_and_a_missing_secret_are_in_ready_false(
    cluster: Cluster, operator: Operator, models: Models, namespace: str, s3_endpoint: str
) -> None:
    """Both at once: the operator reports each on its own InferenceService."""
    create_secret(cluster, namespace, "wrong-creds", "not-the-key")
    uri = "s3://models/mlp/model.onnx"
    expected = {
        "mlp-wrong-key": r"init container fetch-model exited \d+: "
        r".*(SignatureDoesNotMatch|AccessDenied|Forbidden)",
        "mlp-no-secret": r"init container fetch-model CreateContainerConfigError: secret "
        r'"absent-creds" not found',
    }
    cluster.apply(
        [
            s3_isvc(namespace, models, "mlp-wrong-key", s3_endpoint, "wrong-creds", uri),
            s3_isvc(namespace, models, "mlp-no-secret", s3_endpoint, "absent-creds", uri),
        ]
    )

    for name, message in expected.items():
        ready = fetch_failed(cluster, namespace, name)
        assert re.search(message, ready["message"]), ready


def test_an_archive_that_reaches_outside_its_folder_is_in_ready_false(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    """A member named ../escaped: the fetch refuses the archive, and the InferenceService
    says so in Ready=False (ModelFetchFailed) and an Event, with the fetch's own words."""
    relative = "evil/mlp.tar.gz"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, data in (("model.onnx", b"not read"), ("../escaped", b"outside")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    models.local(relative).parent.mkdir(parents=True, exist_ok=True)
    models.local(relative).write_bytes(archive.getvalue())
    models.publish(relative)
    isvc = small(load_sample("onnxruntime-cpu.yaml", namespace, models))
    isvc["metadata"]["name"] = "mlp-evil"
    isvc["spec"]["model"]["storageUri"] = models.uri(relative)
    cluster.apply(isvc)

    ready = fetch_failed(cluster, namespace, "mlp-evil")
    assert "refusing to extract archive entry" in ready["message"], ready
    wait_for(
        "mlp-evil: its ModelFetchFailed Warning Event",
        lambda: any(
            e.get("reason") == "ModelFetchFailed" and e.get("type") == "Warning"
            for e in cluster.items(
                "events", "-n", namespace, "--field-selector", "involvedObject.name=mlp-evil"
            )
        ),
        120,
    )


HUB_REVISION = "v1"


def test_an_hf_file_serves_from_a_hub_layout_and_a_missing_one_is_in_ready_false(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    """No hub is reachable here: the operator's HF_ENDPOINT is the test model store (locally
    on 127.0.0.1, on kind in-cluster), which serves the hub's
    <org>/<repo>/resolve/<revision>/<file> layout for the file published there."""
    relative = f"kinfer-dev/mlp/resolve/{HUB_REVISION}/onnx/model.onnx"
    published = models.local(relative)
    published.parent.mkdir(parents=True, exist_ok=True)
    published.write_bytes(models.local(models.tiers["fp32"]).read_bytes())
    models.publish(relative)
    services = {
        "mlp-hf": f"hf://kinfer-dev/mlp@{HUB_REVISION}/onnx/model.onnx",
        "mlp-hf-missing": "hf://kinfer-dev/mlp@no-such-revision/onnx/model.onnx",
    }
    objects = []
    for name, uri in services.items():
        isvc = small(load_sample("onnxruntime-cpu.yaml", namespace, models))
        isvc["metadata"]["name"] = name
        isvc["spec"]["model"]["storageUri"] = uri
        objects.append(isvc)
    cluster.apply(objects)
    cluster.wait_ready(namespace, "mlp-hf")

    [pod] = cluster.ready_pods(namespace, "mlp-hf")
    [fetch] = pod["spec"]["initContainers"]
    # rclone's http remote: the endpoint, then the hub's path of the file.
    assert f":http:kinfer-dev/mlp/resolve/{HUB_REVISION}/onnx/model.onnx" in fetch["args"], fetch
    assert f"--http-url={models.base_url.rstrip('/')}" in fetch["args"], fetch
    assert_serves(cluster, pod, published)

    ready = fetch_failed(cluster, namespace, "mlp-hf-missing")
    assert re.search(r"init container fetch-model exited \d+: .*not found", ready["message"]), ready


def test_an_oci_modelcar_serves(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    """A model packaged in an OCI image (KServe's modelcar), built with podman FROM the
    project's Debian base and loaded into the kind node, is copied in and served."""
    if cluster.is_local:
        pytest.skip(
            "oci:// runs the model's image, and the local cluster runs no images (its pod "
            "runner refuses the pod with that reason: tests/localcluster/test_container_env.py)"
        )
    model = models.local(models.tiers["fp32"])
    tag = "localhost/kinfer-e2e-modelcar:" + hashlib.sha256(model.read_bytes()).hexdigest()[:12]
    script = Path(__file__).parent / "kind" / "modelcar.sh"
    subprocess.run([str(script), str(model), tag], check=True, timeout=900)
    isvc = small(load_sample("onnxruntime-cpu.yaml", namespace, models))
    isvc["metadata"]["name"] = "mlp-oci"
    isvc["spec"]["model"]["storageUri"] = f"oci://{tag}"
    cluster.apply(isvc)
    cluster.wait_ready(namespace, "mlp-oci")

    [pod] = cluster.ready_pods(namespace, "mlp-oci")
    [fetch] = pod["spec"]["initContainers"]
    assert fetch["image"] == tag
    assert_serves(cluster, pod, model)


def bound_claim(cluster: Cluster, namespace: str, claim: str) -> str:
    """A hostPath PersistentVolume bound to a new claim `claim` (the PV controller binds
    them); returns the PersistentVolume's name, for the caller to delete."""
    volume = f"{namespace}-{claim}"
    cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": volume},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {
                        "path": f"/var/lib/kinfer-e2e/{volume}",
                        "type": "DirectoryOrCreate",
                    },
                    "claimRef": {"namespace": namespace, "name": claim},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "volumeName": volume,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        ]
    )
    wait_for(
        f"claim {claim} Bound",
        lambda: (
            (cluster.get("pvc", claim, "-n", namespace).get("status") or {}).get("phase") == "Bound"
        ),
        120,
    )
    return volume


def copy_into_claim(cluster: Cluster, namespace: str, claim: str, model: Path) -> None:
    """model.onnx into the claim at mlp/model.onnx: on kind through a pod that mounts it (as a
    user fills a volume), on the local cluster into the claim's folder (the pod runner's
    <state>/pvc/<claim>)."""
    if cluster.is_local:
        assert cluster.state_dir is not None
        folder = cluster.state_dir / "pvc" / claim / "mlp"
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(model.read_bytes())
        return
    writer = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pvc-writer", "namespace": namespace},
        "spec": {
            "containers": [
                {
                    "name": "writer",
                    "image": "localhost/kinfer-e2e-python:latest",
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", "import time; time.sleep(3600)"],
                    # The hostPath volume's folder is root's.
                    "securityContext": {"runAsUser": 0},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }
    cluster.apply(writer)
    cluster.kubectl(
        "-n", namespace, "wait", "--for=condition=Ready", "pod/pvc-writer", "--timeout=300s",
        timeout_s=330,
    )  # fmt: skip
    cluster.kubectl("-n", namespace, "exec", "pvc-writer", "--", "mkdir", "-p", "/data/mlp")
    cluster.kubectl("cp", str(model), f"{namespace}/pvc-writer:/data/mlp/model.onnx", timeout_s=300)
    cluster.kubectl("-n", namespace, "delete", "pod", "pvc-writer", "--wait=false")


def test_a_model_on_a_persistent_volume_claim_serves(
    cluster: Cluster, operator: Operator, models: Models, namespace: str
) -> None:
    model = models.local(models.tiers["fp32"])
    volume = bound_claim(cluster, namespace, "models")
    try:
        copy_into_claim(cluster, namespace, "models", model)
        isvc = small(load_sample("onnxruntime-cpu.yaml", namespace, models))
        isvc["metadata"]["name"] = "mlp-pvc"
        isvc["spec"]["model"]["storageUri"] = "pvc://models/mlp/model.onnx"
        cluster.apply(isvc)
        cluster.wait_ready(namespace, "mlp-pvc")

        [pod] = cluster.ready_pods(namespace, "mlp-pvc")
        [claim] = [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
        assert claim["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
        [server] = pod["spec"]["containers"]
        assert claim["name"] not in {m["name"] for m in server.get("volumeMounts") or []}
        assert_serves(cluster, pod, model)
    finally:
        cluster.kubectl("delete", "pv", volume, "--wait=false", check=False)
