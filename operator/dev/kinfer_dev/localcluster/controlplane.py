"""Command lines of etcd, kube-apiserver, kube-controller-manager and kube-scheduler (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinfer_dev.localcluster.config import SERVICE_CLUSTER_IP_RANGE
from kinfer_dev.localcluster.pki import OPERATOR_USER, Pki

HOST = "127.0.0.1"
# The controllers a Deployment-based operator needs, and nothing that would
# write Endpoints (their validation rejects the loopback pod IPs) or talk to a
# cloud: Deployments and ReplicaSets, owner-reference garbage collection,
# namespace deletion, the default ServiceAccount and its CA ConfigMap, node
# readiness taints.
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "pod-garbage-collector-controller",
    "clusterrole-aggregation-controller",
    # Lifts the node.kubernetes.io/not-ready taint that admission puts on new
    # nodes once KWOK reports them Ready (and keeps watching their leases).
    "node-lifecycle-controller",
    # Binds PersistentVolumeClaims to PersistentVolumes, so a pod with a claim (pvc://
    # models) is scheduled; the pod runner reads a claim at <state>/pvc/<claim>. The two
    # protection controllers lift the finalizers admission puts on claims and volumes once
    # nothing uses them (else a namespace with a claim never finishes deleting).
    "persistentvolume-binder-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
)


@dataclass(frozen=True)
class Ports:
    """Every control-plane listener, all on 127.0.0.1, chosen free at `up`."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int
    prometheus: int


def etcd_argv(binary: Path, data_dir: Path, ports: Ports) -> list[str]:
    client = f"http://{HOST}:{ports.etcd_client}"
    peer = f"http://{HOST}:{ports.etcd_peer}"
    return [
        str(binary),
        "--name=kinfer",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=kinfer={peer}",
        "--initial-cluster-state=new",
        # A developer's cluster: fsync on every write only costs time here.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


@dataclass(frozen=True)
class Audit:
    """Where the API server's audit policy and log live (simulated-pods mode only)."""

    policy_file: Path
    log_file: Path


def audit_policy(users: tuple[str, ...] = (OPERATOR_USER,)) -> dict[str, Any]:
    """Metadata (who, verb, resource, when) of `users`' requests and nothing else: what
    `kinfer bench operator` counts an operator's API requests from. One event per request,
    when its response completes (a watch: when it ends)."""
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived", "ResponseStarted"],
        "rules": [
            {"level": "Metadata", "users": list(users)},
            {"level": "None"},
        ],
    }


def audit_argv(audit: Audit) -> list[str]:
    return [
        f"--audit-policy-file={audit.policy_file}",
        f"--audit-log-path={audit.log_file}",
        "--audit-log-format=json",
        # One file for a whole run: no rotation while a bench counts it.
        "--audit-log-maxsize=2048",
        "--audit-log-maxbackup=1",
    ]


def apiserver_argv(binary: Path, pki: Pki, ports: Ports, audit: Audit | None = None) -> list[str]:
    return [
        str(binary),
        f"--etcd-servers=http://{HOST}:{ports.etcd_client}",
        f"--bind-address={HOST}",
        f"--advertise-address={HOST}",
        f"--secure-port={ports.apiserver}",
        f"--tls-cert-file={pki.apiserver_cert}",
        f"--tls-private-key-file={pki.apiserver_key}",
        f"--client-ca-file={pki.ca_cert}",
        "--authorization-mode=Node,RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki.service_account_pub}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        # Configuration only: the allocator needs a range to give Services a
        # ClusterIP, but nothing here ever connects to one (see config.py).
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        # The `kubernetes` Service's Endpoints would hold 127.0.0.1, which
        # Endpoints validation rejects; nothing in-cluster needs it here.
        "--endpoint-reconciler-type=none",
        # The API server dials kubelets (logs, exec) at node addresses, which
        # are loopback; prefer them explicitly.
        "--kubelet-preferred-address-types=InternalIP",
        # `kubectl logs`: the pod runner serves the kubelet endpoint with a cert
        # from the cluster CA and accepts only this client cert.
        f"--kubelet-certificate-authority={pki.ca_cert}",
        f"--kubelet-client-certificate={pki.client_cert('apiserver-kubelet-client')}",
        f"--kubelet-client-key={pki.client_key('apiserver-kubelet-client')}",
        "--allow-privileged=true",
        *(audit_argv(audit) if audit else []),
        "--v=1",
    ]


def controller_manager_argv(binary: Path, pki: Pki, kubeconfig: Path, ports: Ports) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={HOST}",
        f"--secure-port={ports.controller_manager}",
        f"--controllers={','.join(CONTROLLERS)}",
        f"--root-ca-file={pki.ca_cert}",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        # One ServiceAccount per controller, with the bootstrap RBAC roles, as kubeadm runs it.
        "--use-service-account-credentials=true",
        "--leader-elect=false",
        # Faster reactions than the defaults for a test cluster.
        "--concurrent-gc-syncs=5",
        "--v=1",
    ]


def scheduler_argv(binary: Path, kubeconfig: Path, ports: Ports) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={HOST}",
        f"--secure-port={ports.scheduler}",
        "--leader-elect=false",
        "--v=1",
    ]


def kwok_argv(
    binary: Path, kubeconfig: Path, config_file: Path, pod_cidr: str, ports: Ports
) -> list[str]:
    """KWOK manages only the nodes kinfer creates (annotated), with kinfer's Stages."""
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--config={config_file}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        # Fallback pod range; every node also carries its own /24 podCIDR.
        f"--cidr={pod_cidr}",
        f"--node-ip={HOST}",
        f"--server-address={HOST}:{ports.kwok}",
        f"--node-port={ports.kwok}",
        "--node-lease-duration-seconds=40",
        "--v=INFO",
    ]
