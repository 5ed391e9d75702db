#!/usr/bin/env bash
# kinfer's kind cluster, with the podman provider here (the docker provider where
# a Docker engine answers):
#   e2e/kind/cluster.sh up          node image, `kind create cluster`, kinfer's images
#                                   loaded, Prometheus, KWOK GPU nodes, the test models,
#                                   then kinfer installed with `kubectl apply -k manifests/`
#   e2e/kind/cluster.sh install     (again) kubectl apply -k manifests/, with the Triton test image
#   e2e/kind/cluster.sh down        delete the cluster
#   e2e/kind/cluster.sh kubeconfig  print the kubeconfig's path (and nothing else)
#   e2e/kind/cluster.sh status      what runs where (kubectl get pods -A -o wide)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTER=${KINFER_KIND_CLUSTER:-kinfer}
STATE_DIR=${KINFER_KIND_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kinfer/kind}
KUBECONFIG_PATH=$STATE_DIR/kubeconfig

case "${1:-}" in
  kubeconfig) echo "$KUBECONFIG_PATH"; exit 0 ;;
  up|down|status|install) ;;
  *) echo "usage: $0 up|down|install|kubeconfig|status" >&2; exit 2 ;;
esac

# shellcheck source=../../runtime_images/engine.sh
source "$root/runtime_images/engine.sh"
choose_engine
cd "$root"
KINFER=${KINFER:-$root/.venv/bin/kinfer}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
IMAGE_REPO=${IMAGE_REPO:-ghcr.io/kinfer-dev}
# The container network of the kind node, chosen here: the containers' own subnet on
# this machine (podman's or docker's bridge), never an address outside it.
NODE_NETWORK=kinfer-kind
NODE_SUBNET=10.89.64.0/24
export KIND_EXPERIMENTAL_PROVIDER=$ENGINE
export KIND_EXPERIMENTAL_PODMAN_NETWORK=$NODE_NETWORK KIND_EXPERIMENTAL_DOCKER_NETWORK=$NODE_NETWORK

bin=$("$KINFER" cluster build --set kind 2>/dev/null || "$KINFER" cluster build --set kind)
kind=$bin/kind
kubectl() { "$bin/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
exists() { "$kind" get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

if [ "$1" = down ]; then
  if exists; then "$kind" delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_PATH"; else log "no kind cluster $CLUSTER"; fi
  rm -f "$KUBECONFIG_PATH"
  exit 0
fi
install_kinfer() {
  log "installing kinfer: kubectl apply -k manifests/"
  kubectl apply --server-side -k manifests/ >/dev/null
  # The operator's Triton image on this CPU-only cluster: the test image (not the NGC default).
  # hf:// from the in-cluster model store, which serves the hub's <org>/<repo>/resolve/<rev>/
  # layout for the files the e2e tests publish there (no hub is reachable from here).
  kubectl -n kinfer-system set env deployment/kinfer-operator \
    "KINFER_TRITON_IMAGE=$IMAGE_REPO/kinfer-triton-cpu-test:$VERSION" \
    "HF_ENDPOINT=http://model-store.kinfer-e2e.svc.cluster.local:8080" >/dev/null
  kubectl -n kinfer-system rollout status deployment/kinfer-operator --timeout=300s >/dev/null
}
if [ "$1" = install ]; then
  exists || die "no kind cluster $CLUSTER (make kind-up)"
  install_kinfer; exit 0
fi
if [ "$1" = status ]; then
  exists || die "no kind cluster $CLUSTER (make kind-up)"
  kubectl get nodes -o wide; kubectl get pods -A -o wide; exit 0
fi

started=$SECONDS
mkdir -p "$STATE_DIR" /lib/modules  # kind bind-mounts /lib/modules into the node
node_image=$(e2e/kind/node-image.sh)
"$root/runtime_images/build.sh"

# Images only the kind cluster runs (test infrastructure, never pushed).
e2e_image() {  # tag binary
  image_exists "$1" && [ "$("$ENGINE" image inspect --format '{{index .Labels "kinfer.binary"}}' "$1")" = "$(sha256sum <"$2" | cut -c1-16)" ] && return 0
  local ctx; ctx=$(mktemp -d)
  cp "$2" "$ctx/"
  printf '%s\n' 'FROM localhost/kinfer-debian:bookworm' "COPY $(basename "$2") /usr/local/bin/" \
    "LABEL kinfer.binary=$(sha256sum <"$2" | cut -c1-16)" "ENTRYPOINT [\"/usr/local/bin/$(basename "$2")\"]" >"$ctx/Dockerfile"
  "$ENGINE" build -q -t "$1" "$ctx" >/dev/null
  rm -rf "$ctx"
  log "built $1"
}
e2e_image localhost/kinfer-e2e-prometheus:latest "$bin/prometheus"
e2e_image localhost/kinfer-e2e-kwok:latest "$bin/kwok"
"$ENGINE" tag localhost/kinfer-python:3.11 localhost/kinfer-e2e-python:latest

if exists && ! kubectl get --raw /readyz --request-timeout=10s >/dev/null 2>&1; then
  # Its node container stopped (a reboot, a session's end): no way back, start afresh.
  log "kind cluster $CLUSTER exists but its API server does not answer: recreating it"
  "$kind" delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_PATH"
fi
if exists; then
  log "kind cluster $CLUSTER exists; reusing it (make kind-down for a fresh one)"
else
  if ! "$ENGINE" network inspect "$NODE_NETWORK" >/dev/null 2>&1; then
    "$ENGINE" network create --subnet "$NODE_SUBNET" "$NODE_NETWORK" >/dev/null
  fi
  log "kind create cluster --name $CLUSTER --image $node_image"
  "$kind" create cluster --name "$CLUSTER" --image "$node_image" --config e2e/kind/kind-config.yaml \
    --kubeconfig "$KUBECONFIG_PATH" --wait 0s
fi

# Only the images the node lacks or holds at another ID (a warm `kind-up` loads the
# one image that changed).
images=("$IMAGE_REPO/kinfer-operator:$VERSION" "$IMAGE_REPO/kinfer-ort-server:$VERSION"
        "$IMAGE_REPO/kinfer-storage-initializer:$VERSION" "$IMAGE_REPO/kinfer-triton-cpu-test:$VERSION"
        localhost/kinfer-e2e-prometheus:latest localhost/kinfer-e2e-kwok:latest localhost/kinfer-e2e-python:latest)
node=$("$kind" get nodes --name "$CLUSTER" | head -1)
stale=()
for image in "${images[@]}"; do
  local_id=$("$ENGINE" image inspect --format '{{.Id}}' "$image")
  node_id=$("$ENGINE" exec "$node" crictl inspecti -o go-template --template '{{.status.id}}' "$image" 2>/dev/null || true)
  [ "${node_id#sha256:}" = "${local_id#sha256:}" ] || stale+=("$image")
done
if [ ${#stale[@]} -gt 0 ]; then
  log "loading ${#stale[@]} image(s) into the node: ${stale[*]}"
  archive=$(mktemp -u /var/tmp/kinfer-images.XXXXXX.tar)
  "$ENGINE" save -q -m --format docker-archive -o "$archive" "${stale[@]}"
  "$kind" load image-archive --name "$CLUSTER" "$archive"
  rm -f "$archive"
fi

log "waiting for the node and the control plane"
kubectl wait --for=condition=Ready node --all --timeout=300s >/dev/null
# CoreDNS answers the cluster's own names and nothing else: no forwarding upstream.
kubectl -n kube-system get configmap coredns -o yaml | sed '/forward \. /,/}/d' | kubectl apply -f - >/dev/null
kubectl -n kube-system rollout restart deployment/coredns >/dev/null
# One CoreDNS is plenty for one node; its CPU request goes to the model servers.
kubectl -n kube-system scale deployment/coredns --replicas=1 >/dev/null
# kube-proxy runs on real nodes only, not on the simulated GPU nodes.
kubectl -n kube-system patch daemonset kube-proxy --type=merge -p \
  '{"spec":{"template":{"spec":{"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"type","operator":"NotIn","values":["kwok"]}]}]}}}}}}}' >/dev/null

log "Prometheus (monitoring/prometheus-operated), KWOK and the simulated GPU nodes"
kubectl apply -f e2e/kind/prometheus.yaml >/dev/null
"$root/.venv/bin/python" - "$STATE_DIR/prometheus.yml" <<'PY'
import sys, yaml
config = {"global": {"scrape_interval": "2s", "scrape_timeout": "1s", "evaluation_interval": "2s"}}
config.update(yaml.safe_load(open("manifests/prometheus/scrape-config.yaml")))
open(sys.argv[1], "w").write(yaml.safe_dump(config, sort_keys=False))
PY
kubectl -n monitoring create configmap prometheus-config --from-file=prometheus.yml="$STATE_DIR/prometheus.yml" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
"$root/.venv/bin/python" - "$STATE_DIR" <<'PY'
import sys, yaml
from pathlib import Path
from kinfer_dev.localcluster import nodes
from kinfer_dev.localcluster.stages import shipped_path
from kinfer_dev.localcluster.config import DEFAULT_NODES
state = Path(sys.argv[1])
# Nodes kept Ready; pods bound there never run, and go when deleted (pod-delete).
keep = lambda s: s["spec"]["resourceRef"]["kind"] == "Node" or s["metadata"]["name"] == "pod-delete"
stages = [s for s in yaml.safe_load_all(shipped_path().read_text()) if s and keep(s)]
(state / "kwok-stages.yaml").write_text(yaml.safe_dump_all(stages))
# The simulated nodes' addresses are loopback: nothing ever dials them. Their pod
# ranges are /24s of the cluster's own podSubnet that no pod of theirs ever uses.
gpu = [n for n in DEFAULT_NODES if n.has_gpus]
objects = [nodes.node_object(n, "127.0.0.1", f"10.244.{100 + i}.0/24") for i, n in enumerate(gpu)]
(state / "gpu-nodes.yaml").write_text(yaml.safe_dump_all(objects))
PY
kubectl -n kube-system create configmap kwok-stages --from-file=stages.yaml="$STATE_DIR/kwok-stages.yaml" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -f e2e/kind/kwok.yaml >/dev/null
kubectl apply -f "$STATE_DIR/gpu-nodes.yaml" >/dev/null

log "the test models, served in-cluster (kinfer-e2e/model-store)"
kubectl create namespace kinfer-e2e --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -f e2e/kind/model-store.yaml >/dev/null
kubectl -n kinfer-e2e rollout status deployment/model-store --timeout=300s >/dev/null
models=$(mktemp -d)
"$root/.venv/bin/python" -c "from pathlib import Path; from kinfer_dev.localcluster.modelstore import build_test_models; build_test_models(Path('$models'))"
store=$(kubectl -n kinfer-e2e get pods -l app=model-store -o jsonpath='{.items[0].metadata.name}')
kubectl -n kinfer-e2e cp "$models/." "$store:/models/"
rm -rf "$models"

install_kinfer
if [[ " ${stale[*]} " == *" $IMAGE_REPO/kinfer-operator:$VERSION "* ]]; then
  # Same tag, new image: the running operator pod still has the old one.
  kubectl -n kinfer-system rollout restart deployment/kinfer-operator >/dev/null
  kubectl -n kinfer-system rollout status deployment/kinfer-operator --timeout=300s >/dev/null
fi
for target in kube-system/deployment/coredns kube-system/deployment/kwok-controller monitoring/deployment/prometheus; do
  kubectl -n "${target%%/*}" rollout status "${target#*/}" --timeout=300s >/dev/null || {
    kubectl -n "${target%%/*}" get pods -o wide >&2; die "${target} did not become ready"; }
done
kubectl wait --for=condition=Ready node --all --timeout=120s >/dev/null
log "kind cluster $CLUSTER is up with kinfer installed ($((SECONDS - started))s)"
cat <<TXT
  export KUBECONFIG=$KUBECONFIG_PATH
  kubectl get pods -A -o wide
  kubectl apply -f manifests/samples/onnxruntime-cpu.yaml   # its storageUri: see docs/local-cluster.md
  make kind-down
TXT
