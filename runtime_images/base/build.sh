#!/usr/bin/env bash
# Makes the base images kinfer's Dockerfiles build FROM when no registry can be
# reached, from Debian's packages alone, once (later runs find them and return):
#   kinfer-debian:bookworm  debootstrap --variant=minbase bookworm, with ca-certificates
#   kinfer-python:3.11      + Debian's python3 (3.11) and venv: stands in for python:3.11-slim
#   kinfer-golang:1.26      + this machine's Go toolchain: stands in for golang:1.26
# Usage: runtime_images/base/build.sh [--force]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../engine.sh
source "$here/../engine.sh"
choose_engine

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_IMAGE=localhost/kinfer-debian:bookworm
PYTHON_IMAGE=localhost/kinfer-python:3.11
GOLANG_IMAGE=localhost/kinfer-golang:1.26
force=0; [ "${1:-}" = --force ] && force=1

need() { [ "$force" = 1 ] || ! image_exists "$1"; }

if need "$DEBIAN_IMAGE"; then
  command -v debootstrap >/dev/null || {
    log "installing debootstrap (Debian's package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  rootfs=$(mktemp -d /var/tmp/kinfer-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap bookworm (minbase) from $MIRROR into $rootfs"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$MIRROR" >/dev/null
  # Images carry no apt lists or caches; packages come back with apt-get update.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$MIRROR" "$MIRROR" >"$rootfs/etc/apt/sources.list"
  log "importing $DEBIAN_IMAGE"
  tar -C "$rootfs" -c . | "$ENGINE" import -q --change 'CMD ["/bin/bash"]' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$rootfs"; trap - EXIT
fi

if need "$PYTHON_IMAGE"; then
  log "building $PYTHON_IMAGE"
  "$ENGINE" build -q -t "$PYTHON_IMAGE" --build-arg "BASE=$DEBIAN_IMAGE" -f - "$here" >/dev/null <<'DOCKERFILE'
ARG BASE
FROM ${BASE}
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      python3 python3-venv >/dev/null && rm -rf /var/lib/apt/lists/*
DOCKERFILE
fi

if need "$GOLANG_IMAGE"; then
  goroot=$(go env GOROOT 2>/dev/null) || die "Go >= 1.26 is needed to make $GOLANG_IMAGE"
  log "building $GOLANG_IMAGE from $goroot ($(go version))"
  "$ENGINE" build -q -t "$GOLANG_IMAGE" --build-arg "BASE=$DEBIAN_IMAGE" -v "$goroot:/mnt/go:ro" -f - "$here" >/dev/null <<'DOCKERFILE'
ARG BASE
FROM ${BASE}
RUN cp -a /mnt/go /usr/local/go && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev git >/dev/null \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/local/go/bin:/go/bin:$PATH GOPATH=/go
DOCKERFILE
fi
log "base images: $("$ENGINE" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'kinfer-(debian|python|golang)' | tr '\n' ' ')"
