#!/usr/bin/env bash
# Shared by kinfer's image and kind scripts (sourced, not run): picks the container
# engine and makes podman usable as root on a fresh Debian machine.
#   ENGINE=docker|podman overrides the choice; the default is docker when a Docker
#   engine answers, podman otherwise.

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Debian's podman 4.3 as root on a host with hybrid cgroups needs cgroupfs and runc
# (crun refuses them), and the ulimits a kubelet and its servers expect. A drop-in,
# so a user's own containers.conf stays as it is.
PODMAN_CONF=/etc/containers/containers.conf.d/50-kinfer.conf

ensure_podman() {
  if ! command -v podman >/dev/null; then
    log "installing podman (Debian's package)"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      podman runc containernetworking-plugins iptables uidmap >/dev/null
  fi
  if [ ! -f "$PODMAN_CONF" ]; then
    log "writing $PODMAN_CONF (cgroupfs, runc, ulimits)"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo mkdir -p "$(dirname "$PODMAN_CONF")"
    printf '%s\n' '# Written by kinfer (runtime_images/engine.sh).' '[containers]' \
      'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' '[engine]' \
      'cgroup_manager = "cgroupfs"' 'runtime = "runc"' | $sudo tee "$PODMAN_CONF" >/dev/null
  fi
}

# ENGINE: docker where a Docker engine answers (not just the client), else podman.
choose_engine() {
  if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
      ENGINE=docker
    else
      ENGINE=podman
    fi
  fi
  [ "$ENGINE" = podman ] && ensure_podman
  export ENGINE
}

image_exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }
