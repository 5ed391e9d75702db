"""Generated PKI, the KWOK Stages file and the build cache key."""

from __future__ import annotations

import ipaddress
from importlib import resources
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from kinfer_dev.localcluster import build, config, pki


def test_pki_signs_server_and_client_certs_with_one_ca(tmp_path: Path) -> None:
    generated = pki.generate(tmp_path, apiserver_ips=("127.0.0.1",))
    ca = x509.load_pem_x509_certificate(generated.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(generated.apiserver_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    admin = x509.load_pem_x509_certificate(generated.client_cert("admin").read_bytes())
    admin.verify_directly_issued_by(ca)
    orgs = admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [o.value for o in orgs] == ["system:masters"]
    assert generated.client_key("admin").stat().st_mode & 0o077 == 0


def test_kubeconfig_points_at_the_pki_files(tmp_path: Path) -> None:
    generated = pki.generate(tmp_path, apiserver_ips=("127.0.0.1",))
    kubeconfig = pki.kubeconfig(generated, "admin", "https://127.0.0.1:6443")
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert kubeconfig["users"][0]["user"]["client-key"] == str(generated.client_key("admin"))


def test_kwok_stages_gate_kinfer_pod_readiness_on_the_runner_annotations() -> None:
    text = (resources.files("kinfer_dev.localcluster") / "kwok-stages.yaml").read_text()
    stages = {s["metadata"]["name"]: s for s in yaml.safe_load_all(text)}
    assert {"node-initialize", "pod-create", "pod-delete", "kinfer-pod-started"} <= set(stages)
    sync = yaml.safe_dump(stages["kinfer-pod-sync"])
    assert config.ANNOTATION_SERVER_READY in sync
    assert config.ANNOTATION_SERVER_RESTARTS in sync
    # The general pod-ready stage must skip kinfer's pods (they wait for their server).
    keys = [e["key"] for e in stages["pod-ready"]["spec"]["selector"]["matchExpressions"]]
    assert '.metadata.labels["kinfer.dev/inferenceservice"]' in keys


def test_cache_key_follows_the_pinned_modules(tmp_path: Path) -> None:
    for module in ("kubernetes", "kwok"):
        (tmp_path / module).mkdir()
        (tmp_path / module / "go.mod").write_text(f"module {module}\n")
        (tmp_path / module / "go.sum").write_text("")
    before = build.cache_key(tmp_path)
    assert build.cache_key(tmp_path) == before
    (tmp_path / "kwok" / "go.mod").write_text("module kwok\nrequire sigs.k8s.io/kwok v0.9.0\n")
    assert build.cache_key(tmp_path) != before


def test_shipped_go_modules_pin_every_binary() -> None:
    modules = build.modules_dir()
    for binary in build.BINARIES:
        go_mod = (modules / binary.module / "go.mod").read_text()
        assert (modules / binary.module / "go.sum").exists()
        root = binary.package.split("/cmd/")[0]
        assert root in go_mod, f"{binary.package} is not pinned in {binary.module}/go.mod"
