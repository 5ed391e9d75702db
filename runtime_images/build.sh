#!/usr/bin/env bash
# `make images`: builds kinfer's images with docker (when a Docker engine answers)
# or podman, tagged as the install manifests name them ($IMAGE_REPO/NAME:$VERSION).
#   runtime_images/build.sh                 operator, ort-server, storage-initializer, triton-cpu-test
#   runtime_images/build.sh ort-server-cuda the CUDA variant of kinfer-ort-server (large)
# Where no registry answers, the Dockerfiles' bases are made from Debian's packages
# first (runtime_images/base/build.sh). BASE=registry|local forces the choice.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=engine.sh
source "$root/runtime_images/engine.sh"
choose_engine
cd "$root"

VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)}
IMAGE_REPO=${IMAGE_REPO:-ghcr.io/kinfer-dev}
CA=/etc/ssl/certs/ca-certificates.crt

# Registry bases when the registry answers; else the ones made from Debian's packages.
if [ -z "${BASE:-}" ]; then
  if timeout 60 "$ENGINE" pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1; then BASE=registry; else BASE=local; fi
fi
if [ "$BASE" = local ]; then
  "$root/runtime_images/base/build.sh"
  BASE_ARGS=(--build-arg PYTHON_IMAGE=localhost/kinfer-python:3.11 --build-arg GO_IMAGE=localhost/kinfer-golang:1.26
             --build-arg DEBIAN_IMAGE=localhost/kinfer-debian:bookworm)
else
  BASE_ARGS=()
fi
# The host's CA bundle, for the build steps only (pip, Go's module proxy), where it exists.
CA_ARGS=()
[ -f "$CA" ] && CA_ARGS=(-v "$CA:$CA:ro" --build-arg "CA_BUNDLE=$CA")

build() {  # name context dockerfile [build args...]
  local name=$1 context=$2 dockerfile=$3; shift 3
  # No Dockerfile installs Debian's ca-certificates with this CA mount (dpkg cannot replace
  # a bind-mounted file): the storage-initializer copies its Go stage's bundle instead.
  local ca=("${CA_ARGS[@]}")
  local tag="$IMAGE_REPO/$name:$VERSION" started=$SECONDS
  log "building $tag ($ENGINE, $BASE bases)"
  "$ENGINE" build --layers -q -t "$tag" -f "$dockerfile" "${BASE_ARGS[@]}" "${ca[@]}" "$@" "$context" >/dev/null
  log "built $tag in $((SECONDS - started))s: $("$ENGINE" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(operator ort-server storage-initializer triton-cpu-test)
for target in "${targets[@]}"; do
  case "$target" in
    operator) build kinfer-operator . runtime_images/operator/Dockerfile ;;
    ort-server) build kinfer-ort-server runtime_images/onnxruntime runtime_images/onnxruntime/Dockerfile ;;
    ort-server-cuda)
      VERSION="$VERSION-cuda" build kinfer-ort-server runtime_images/onnxruntime runtime_images/onnxruntime/Dockerfile \
        --build-arg ORT_PACKAGE='onnxruntime-gpu[cuda,cudnn]' ;;
    storage-initializer) build kinfer-storage-initializer runtime_images/storage-initializer runtime_images/storage-initializer/Dockerfile ;;
    triton-cpu-test) build kinfer-triton-cpu-test . runtime_images/triton-cpu-test/Dockerfile ;;
    *) die "unknown image '$target' (operator, ort-server, ort-server-cuda, storage-initializer, triton-cpu-test)" ;;
  esac
done
