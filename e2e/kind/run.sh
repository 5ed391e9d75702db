#!/usr/bin/env bash
# kinfer's e2e suite on kind (needs Docker, kind, kubectl): create the cluster,
# build and load the images, install kinfer through manifests/ (kustomize),
# serve the test models in-cluster, then run `pytest e2e` against it.
#   e2e/kind/run.sh            # KEEP=1 leaves the cluster up afterwards
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=kinfer-e2e
PYTHON=${PYTHON:-.venv/bin/python}
export KUBECONFIG=${KUBECONFIG_KIND:-$PWD/.kind-kubeconfig}

kind create cluster --name "$CLUSTER" --config e2e/kind/kind-config.yaml --kubeconfig "$KUBECONFIG" --wait 180s
cleanup() { [ "${KEEP:-0}" = 1 ] || kind delete cluster --name "$CLUSTER"; }
trap cleanup EXIT

docker build -f runtime_images/operator/Dockerfile -t kinfer-operator:e2e .
docker build -t kinfer-ort-server:e2e runtime_images/onnxruntime
kind load docker-image --name "$CLUSTER" kinfer-operator:e2e kinfer-ort-server:e2e

# Simulated GPUs (scheduling only): GFD labels, the NVIDIA taint and extended
# resources advertised on the nodes' status, as the device plugin would.
gpu_node() {  # node product count [mig-profile mig-count]
  local node=$1 product=$2 count=$3
  kubectl label node "$node" --overwrite nvidia.com/gpu.present=true \
    "nvidia.com/gpu.product=$product" "nvidia.com/gpu.count=$count"
  kubectl taint node "$node" --overwrite nvidia.com/gpu=present:NoSchedule
  local capacity="{\"nvidia.com/gpu\": \"$count\"}"
  if [ $# -ge 5 ]; then
    kubectl label node "$node" --overwrite nvidia.com/mig.strategy=mixed "nvidia.com/mig-$4.count=$5"
    capacity="{\"nvidia.com/mig-$4\": \"$5\"}"
  fi
  kubectl patch node "$node" --subresource=status --type=merge \
    -p "{\"status\": {\"capacity\": $capacity}}"
}
node_of() { kubectl get nodes -l "kinfer.dev/e2e-node=$1" -o jsonpath='{.items[0].metadata.name}'; }
gpu_node "$(node_of gpu-a100)" NVIDIA-A100-SXM4-80GB 4
gpu_node "$(node_of gpu-l4)" NVIDIA-L4 4
gpu_node "$(node_of gpu-mig)" NVIDIA-A100-SXM4-80GB 0 1g.10gb 7

# The same deterministic test models the suite computes references from.
models=$(mktemp -d)
"$PYTHON" -c "from pathlib import Path; from kinfer.localcluster.modelstore import build_test_models; build_test_models(Path('$models'))"
kubectl create namespace kinfer-e2e --dry-run=client -o yaml | kubectl apply -f -
for tier in fp32 fp16 int8; do
  kubectl -n kinfer-e2e create configmap "e2e-model-$tier" --from-file=model.onnx="$models/mlp/$tier/model.onnx" \
    --dry-run=client -o yaml | kubectl apply --server-side -f -
done
kubectl apply -f e2e/kind/model-store.yaml
kubectl -n kinfer-e2e rollout status deployment/model-store --timeout=300s

kubectl apply --server-side -k e2e/kind/
kubectl -n kinfer-system rollout status deployment/kinfer-operator --timeout=300s

KINFER_E2E_OPERATOR=installed \
KINFER_E2E_MODEL_BASE_URL=http://model-store.kinfer-e2e.svc.cluster.local:8080 \
  "$PYTHON" -m pytest e2e "$@"
