"""Certificates, service-account keys and kubeconfigs of the local cluster, generated at start."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for a developer's cluster, short enough to never matter outside it.
VALIDITY = datetime.timedelta(days=365)

# The user of the `operator` client below.
OPERATOR_USER = "kinfer-operator"
# Clients of the API server: (file stem, common name, organisation). The
# controller-manager and scheduler get the identities the bootstrap RBAC roles
# name, so they run with their real (least) privileges; kwok and the pod
# runner act as a kubelet would, which needs broad rights: cluster-admin.
CLIENTS = (
    ("admin", "kinfer-admin", "system:masters"),
    ("controller-manager", "system:kube-controller-manager", None),
    ("scheduler", "system:kube-scheduler", None),
    ("kwok", "kinfer-kwok", "system:masters"),
    ("runner", "kinfer-pod-runner", "system:masters"),
    ("prometheus", "kinfer-prometheus", "system:masters"),
    # An operator run as a local process for measurements (`kinfer bench operator`): its own
    # user, so the API server's audit log can tell its requests from everyone else's.
    ("operator", OPERATOR_USER, "system:masters"),
    ("metrics-simulator", "kinfer-metrics-simulator", "system:masters"),
    ("power-simulator", "kinfer-power-simulator", "system:masters"),
    # The API server towards kubelets (`kubectl logs`); the pod runner accepts only it.
    ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", None),
)


@dataclass(frozen=True)
class Pki:
    """Paths of every generated file, relative to nothing: all absolute."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def kubelet_cert(self) -> Path:
        """The pod runner's serving cert for the nodes' kubelet endpoint (`kubectl logs`)."""
        return self.directory / "kubelet.crt"

    @property
    def kubelet_key(self) -> Path:
        return self.directory / "kubelet.key"

    @property
    def service_account_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.directory / "sa.pub"

    def client_cert(self, stem: str) -> Path:
        return self.directory / f"{stem}.crt"

    def client_key(self, stem: str) -> Path:
        return self.directory / f"{stem}.key"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, organisation: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organisation:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    return x509.Name(attributes)


def _sign(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    ca_cert: x509.Certificate | None,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool = False,
    server_names: tuple[str, ...] = (),
    server_ips: tuple[str, ...] = (),
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject if ca_cert else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server_names or server_ips:
        alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def generate(
    directory: Path, *, apiserver_ips: tuple[str, ...], kubelet_ips: tuple[str, ...] = ()
) -> Pki:
    """Write a CA, the API server's and the nodes' serving certs, client certs and SA keys."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    ca_key = _new_key()
    ca_cert = _sign(_name("kinfer-local-ca"), ca_key.public_key(), None, ca_key, is_ca=True)
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.ca_cert, ca_cert)

    server_key = _new_key()
    server_cert = _sign(
        _name("kube-apiserver"),
        server_key.public_key(),
        ca_cert,
        ca_key,
        server_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        server_ips=apiserver_ips,
    )
    _write_key(pki.apiserver_key, server_key)
    _write_cert(pki.apiserver_cert, server_cert)

    kubelet_key = _new_key()
    kubelet_cert = _sign(
        _name("kinfer-local-kubelet"),
        kubelet_key.public_key(),
        ca_cert,
        ca_key,
        server_names=("localhost",),
        server_ips=kubelet_ips or ("127.0.0.1",),
    )
    _write_key(pki.kubelet_key, kubelet_key)
    _write_cert(pki.kubelet_cert, kubelet_cert)

    for stem, common_name, organisation in CLIENTS:
        key = _new_key()
        cert = _sign(
            _name(common_name, organisation), key.public_key(), ca_cert, ca_key, client=True
        )
        _write_key(pki.client_key(stem), key)
        _write_cert(pki.client_cert(stem), cert)

    # Service-account tokens are signed with RS256 by default: an RSA key.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.service_account_key, sa_key)
    pki.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def kubeconfig(pki: Pki, stem: str, server_url: str, cluster_name: str = "kinfer-local") -> dict:
    """A kubeconfig for client `stem` that embeds nothing: it points at the PKI files."""
    user = f"{cluster_name}-{stem}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {"server": server_url, "certificate-authority": str(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki.client_cert(stem)),
                    "client-key": str(pki.client_key(stem)),
                },
            }
        ],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": cluster_name,
    }


def write_kubeconfig(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
