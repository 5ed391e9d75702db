#!/usr/bin/env bash
# A modelcar image for the oci:// e2e test (KServe's layout: the model under /models, and cp
# in the image), built FROM the project's Debian base and loaded into the kind node. Run it
# under the kind lock, as every podman/kind command (e2e/test_model_sources.py does, from
# e2e/kind/run.sh).
#   e2e/kind/modelcar.sh MODEL_FILE TAG
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTER=${KINFER_KIND_CLUSTER:-kinfer}
[ $# -eq 2 ] || { echo "usage: $0 MODEL_FILE TAG" >&2; exit 2; }
model=$1 tag=$2
# shellcheck source=../../runtime_images/engine.sh
source "$root/runtime_images/engine.sh"
choose_engine
export KIND_EXPERIMENTAL_PROVIDER=$ENGINE
kind=$("$root/.venv/bin/kinfer" cluster build --set kind)/kind
# The base the project's images use: the registry's where it answers, else the one
# runtime_images/base/build.sh makes from Debian's packages.
base=debian:bookworm-slim
image_exists localhost/kinfer-debian:bookworm && base=localhost/kinfer-debian:bookworm
context=$(mktemp -d)
archive=$(mktemp -u /var/tmp/kinfer-modelcar.XXXXXX.tar)
trap 'rm -rf "$context" "$archive"' EXIT
install -m 0644 "$model" "$context/model.onnx"
printf 'FROM %s\nCOPY model.onnx /models/model.onnx\n' "$base" >"$context/Dockerfile"
log "building $tag FROM $base"
"$ENGINE" build -q -t "$tag" "$context" >/dev/null
"$ENGINE" save -q --format docker-archive -o "$archive" "$tag"
"$kind" load image-archive --name "$CLUSTER" "$archive"
