# kinfer developer entry points. `make demo` and `make test` are the README's
# first two commands; .ci/run calls `make test` on a clean checkout.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The caller's own PATH, before ours: `demo` and `cluster-up` run with it, so the commands
# they print for the user's shell name a kinfer that shell finds (`.venv/bin/kinfer`).
CALLER_PATH := $(PATH)
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help install grpc-frontend test unit e2e lint fmt crds rules dashboards demo cluster-deps cluster-build cluster-up cluster-status cluster-down bench bench-runtime bench-autoscale images images-cuda kind-up kind-down kind-kubeconfig kind-status e2e-kind

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/kinfer: pyproject.toml operator/dev/pyproject.toml runtime_images/onnxruntime/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e operator/dev -e runtime_images/onnxruntime
	@touch $@

install: $(BIN)/kinfer  ## create .venv with kinfer, kinfer-dev (cluster, bench), its server and the dev tools

# kinfer-ort-server's gRPC port is served by this Go binary (its Dockerfile builds the
# same); the server finds it beside the venv's python. kinfer-perf, the runtime bench's
# native load client, shares the module. `-mod=readonly`: go.sum is the truth.
FRONTEND := runtime_images/onnxruntime/grpc_frontend
$(BIN)/kinfer-grpc-frontend: $(wildcard $(FRONTEND)/*.go $(FRONTEND)/cmd/*/*.go) $(FRONTEND)/go.mod $(FRONTEND)/go.sum | $(BIN)/kinfer
	@command -v go >/dev/null || { echo "kinfer-grpc-frontend is built with Go >= 1.26: install Go"; exit 1; }
	cd $(FRONTEND) && go build -mod=readonly -trimpath -o $(abspath $(BIN))/ . ./cmd/kinfer-perf
	@touch $@

grpc-frontend: $(BIN)/kinfer-grpc-frontend  ## build kinfer-ort-server's Go gRPC frontend (and kinfer-perf) into .venv/bin

lint: install  ## ruff check + format check; gofmt + go vet on the gRPC frontend
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@unformatted="$$(gofmt -l $(FRONTEND))"; [ -z "$$unformatted" ] || { echo "gofmt needed: $$unformatted"; exit 1; }
	cd $(FRONTEND) && go vet -mod=readonly ./...

fmt: install  ## ruff format + fix, gofmt
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	gofmt -w $(FRONTEND)

crds: install  ## regenerate crds/ (and its copy in manifests/crd/) from the API model
	$(BIN)/kinfer crd > crds/kinfer.dev_inferenceservices.yaml
	cp crds/kinfer.dev_inferenceservices.yaml manifests/crd/
	$(BIN)/python -m kinfer.api.reference docs/api.md

RULES := manifests/prometheus/rules
rules: install  ## regenerate manifests/prometheus/rules/ (and the local cluster's copy) from kinfer.observability.rules
	@mkdir -p $(RULES)
	$(BIN)/python -m kinfer.observability.rules --plain > $(RULES)/kinfer-rules.yaml
	$(BIN)/python -m kinfer.observability.rules --prometheusrule > $(RULES)/prometheusrule.yaml
	cp $(RULES)/kinfer-rules.yaml operator/dev/kinfer_dev/localcluster/prometheus/

dashboards: install  ## regenerate manifests/grafana/ (the Grafana dashboards) from kinfer_dev.observability.dashboards
	$(BIN)/python -m kinfer_dev.observability.dashboards manifests/grafana

unit: install grpc-frontend  ## unit + data-plane tests (no cluster)
	cd $(FRONTEND) && go test -mod=readonly ./...
	$(BIN)/pytest tests

e2e: install grpc-frontend cluster-deps  ## e2e suite on KUBECONFIG, or on the local cluster when none is set
	$(BIN)/pytest e2e

# The local-cluster e2e leaves out what `make e2e-kind` (run by CI after this) covers on
# real containers; `make e2e` runs all of it on the local cluster.
test: install grpc-frontend cluster-deps  ## lint, unit, data plane, e2e on the local cluster (CI: then e2e-kind)
	$(MAKE) lint
	cd $(FRONTEND) && go test -mod=readonly ./...
	KINFER_E2E_SKIP_KIND_COVERED=1 $(BIN)/pytest tests e2e --durations=25

# SPIKE=0: no load spike, a quick check that kinfer installs and serves.
SPIKE ?= 1
DEMO_FLAGS := $(if $(filter 0,$(SPIKE)),--no-spike)
demo: install grpc-frontend cluster-deps  ## local cluster (or KUBECONFIG's), kinfer, a tiered model, a load spike (SPIKE=0: none)
	@echo '$(strip $(BIN)/kinfer cluster demo $(DEMO_FLAGS))'
	@PATH='$(CALLER_PATH)' $(BIN)/kinfer cluster demo $(DEMO_FLAGS)

# Debian's prometheus (and promtool) for the local cluster; Go builds the rest, rclone
# included. The packaged Prometheus service is never used: stop it where systemd started it.
cluster-deps:  ## apt packages the local cluster needs (prometheus)
	@missing=""; for tool in prometheus promtool; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends prometheus; \
	  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then $$sudo systemctl disable --now prometheus; fi; \
	fi
	@command -v go >/dev/null || { echo "the local cluster builds its binaries with Go >= 1.26: install Go"; exit 1; }

cluster-build: install  ## build the local cluster's binaries into ~/.cache/kinfer (once)
	$(BIN)/kinfer cluster build

cluster-up: install cluster-deps  ## start the local cluster (builds it the first time)
	@echo '$(BIN)/kinfer cluster up'
	@PATH='$(CALLER_PATH)' $(BIN)/kinfer cluster up

cluster-status: install  ## what the local cluster runs
	$(BIN)/kinfer cluster status

cluster-down: install  ## stop the local cluster and remove its state
	$(BIN)/kinfer cluster down

# Containers: docker where a Docker engine answers, else podman (installed and set up
# by runtime_images/engine.sh). Bases come from Debian's packages when no registry answers.
images: install  ## build kinfer's images (operator, ort-server, storage-initializer, triton-cpu-test)
	runtime_images/build.sh

images-cuda: install  ## build the CUDA variant of kinfer-ort-server (onnxruntime-gpu; large)
	runtime_images/build.sh ort-server-cuda

kind-up: install cluster-deps  ## a kind cluster (node image assembled offline) with kinfer installed
	e2e/kind/cluster.sh up

kind-down:  ## delete the kind cluster
	@e2e/kind/cluster.sh down

kind-kubeconfig:  ## print the kind cluster's kubeconfig path (use with make -s)
	@e2e/kind/cluster.sh kubeconfig

kind-status: install  ## nodes and pods of the kind cluster
	@e2e/kind/cluster.sh status

e2e-kind: kind-up  ## the e2e suite against the kind cluster (through KUBECONFIG only)
	e2e/kind/run.sh

bench: bench-runtime bench-autoscale  ## all benchmarks

bench-runtime: install grpc-frontend  ## onnxruntime vs kinfer-ort-server vs local Triton latency/throughput
	$(BIN)/kinfer bench runtime

bench-autoscale: install  ## kinfer vs HPA vs KPA vs oracle on the project's traces
	$(BIN)/kinfer bench autoscale --all --out docs/bench
