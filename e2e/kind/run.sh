#!/usr/bin/env bash
# `make e2e-kind`: kinfer's e2e suite against the kind cluster that `make kind-up`
# left up, through KUBECONFIG only. The operator runs in-cluster (installed from
# manifests/), the test models are served in-cluster, and the in-cluster
# Prometheus is reached from here through a port-forward on 127.0.0.1.
#   e2e/kind/run.sh [pytest args]     e.g. -k helm, or e2e/test_samples.py alone
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
source runtime_images/engine.sh
KUBECONFIG=$(e2e/kind/cluster.sh kubeconfig)
[ -f "$KUBECONFIG" ] || die "no kind cluster: make kind-up"
export KUBECONFIG
bin=$(.venv/bin/kinfer cluster build --set kind)
export PATH="$bin:$PATH"  # the cluster's own kubectl

log_dir=$(mktemp -d)
kubectl -n monitoring port-forward --address 127.0.0.1 svc/prometheus-operated :9090 >"$log_dir/prometheus-forward.log" 2>&1 &
forward=$!
trap 'kill $forward 2>/dev/null || true; rm -rf "$log_dir"' EXIT
for _ in $(seq 100); do
  port=$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$log_dir/prometheus-forward.log" | head -1)
  [ -n "$port" ] && break
  kill -0 $forward 2>/dev/null || die "kubectl port-forward to Prometheus exited: $(cat "$log_dir/prometheus-forward.log")"
  sleep 0.1
done
[ -n "${port:-}" ] || die "kubectl port-forward to Prometheus printed no port"

export KINFER_E2E_OPERATOR=installed
export KINFER_E2E_MODEL_BASE_URL=http://model-store.kinfer-e2e.svc.cluster.local:8080
export KINFER_PROMETHEUS_URL=http://127.0.0.1:$port
log "e2e on kind: KUBECONFIG=$KUBECONFIG, Prometheus at $KINFER_PROMETHEUS_URL"
# Test files or node ids given: those alone; else the whole suite (plus any -k, -x...).
targets=(e2e)
for arg in "$@"; do
  case "$arg" in e2e/*) targets=() ;; esac
done
.venv/bin/python -m pytest "${targets[@]}" -rs --durations=25 "$@"
