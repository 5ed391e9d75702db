#!/usr/bin/env bash
# Assembles kinfer's kind node image offline, with no image pulled from anywhere:
#   1. the binaries: `kinfer cluster build --set kind` (pinned Go modules);
#   2. the images kubeadm asks for (`kubeadm config images list`): the control
#      plane and kube-proxy from those binaries, etcd and CoreDNS from their pinned
#      modules, pause from the C source in the Kubernetes module (gcc -static);
#   3. e2e/kind/node/Dockerfile on the Debian base (systemd, containerd, runc, CNI);
#   4. those images imported into its containerd, then committed.
# The result is cached under a tag derived from every input; prints its name.
#   e2e/kind/node-image.sh [--force]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../../runtime_images/engine.sh
source "$root/runtime_images/engine.sh"
choose_engine
cd "$root"

# The pod range of the single kind node: the containers' own addresses, inside the
# node's network namespace (kind-config.yaml's podSubnet, its first /24).
POD_CIDR=10.244.0.0/24
KINFER=${KINFER:-$root/.venv/bin/kinfer}
force=0; [ "${1:-}" = --force ] && force=1

"$root/runtime_images/base/build.sh"
log "building the kind binaries (kinfer cluster build --set kind; the first time takes a while)"
bin=$("$KINFER" cluster build --set kind)
k8s_version=$("$bin/kubeadm" version -o short)
key=$( { cat e2e/kind/node-image.sh; find e2e/kind/node -type f | sort | xargs cat; basename "$bin"; } | sha256sum | cut -c1-12)
NODE_IMAGE=localhost/kinfer-kind-node:$k8s_version-$key
if [ "$force" = 0 ] && image_exists "$NODE_IMAGE"; then
  log "node image $NODE_IMAGE is built"
  echo "$NODE_IMAGE"; exit 0
fi

work=$(mktemp -d /var/tmp/kinfer-node.XXXXXX)
builder=kinfer-node-build-$$
cleanup() { "$ENGINE" rm -f "$builder" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# --- 2. the images kubeadm asks for, each from its own binary -------------------
mapfile -t wanted < <("$bin/kubeadm" config images list --kubernetes-version "$k8s_version")
log "images kubeadm $k8s_version asks for: ${wanted[*]}"
component_image() {  # tag binary-or-empty dockerfile-lines...
  local tag=$1 binary=$2; shift 2
  local ctx="$work/ctx-${tag##*/}"; ctx=${ctx%%:*}
  mkdir -p "$ctx"
  [ -z "$binary" ] || cp "$binary" "$ctx/"
  printf '%s\n' "$@" >"$ctx/Dockerfile"
  "$ENGINE" build -q -t "$tag" --build-arg DEBIAN_IMAGE=localhost/kinfer-debian:bookworm "$ctx" >/dev/null
  log "  built $tag"
}
pause_bin() {
  local source
  source="$(go env GOMODCACHE)/k8s.io/kubernetes@$k8s_version/build/pause/linux/pause.c"
  [ -f "$source" ] || (cd operator/dev/kinfer_dev/localcluster/go/kubernetes && go mod download k8s.io/kubernetes)
  gcc -Os -static -DVERSION="$1" -o "$work/pause" "$source"
  strip "$work/pause"
  echo "$work/pause"
}
pinned() {  # module path: the version go/<module>/go.mod requires of path
  grep -oP "(^|\s|require )\Q$2\E \Kv\S+" "operator/dev/kinfer_dev/localcluster/go/$1/go.mod" | head -1
}
for image in "${wanted[@]}"; do
  name=${image##*/}; name=${name%%:*}; tag=${image##*:}
  case "$name" in
    kube-apiserver|kube-controller-manager|kube-scheduler)
      component_image "$image" "$bin/$name" 'ARG DEBIAN_IMAGE' 'FROM ${DEBIAN_IMAGE}' "COPY $name /usr/local/bin/$name" ;;
    kube-proxy)
      component_image "$image" "$bin/$name" 'ARG DEBIAN_IMAGE' 'FROM ${DEBIAN_IMAGE}' \
        'RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y -qq --no-install-recommends iptables nftables conntrack ipset kmod >/dev/null && rm -rf /var/lib/apt/lists/*' \
        "COPY $name /usr/local/bin/$name" ;;
    etcd)
      have=$(pinned kubernetes go.etcd.io/etcd/server/v3); have=${have#v}
      [ "${tag%-*}" = "$have" ] || die "kubeadm asks for etcd $tag; the pinned module builds $have"
      component_image "$image" "$bin/etcd" 'ARG DEBIAN_IMAGE' 'FROM ${DEBIAN_IMAGE}' 'COPY etcd /usr/local/bin/etcd' ;;
    coredns)
      have=$(pinned coredns github.com/coredns/coredns)
      [ "$tag" = "$have" ] || die "kubeadm asks for CoreDNS $tag; go/coredns/go.mod pins $have"
      component_image "$image" "$bin/coredns" 'ARG DEBIAN_IMAGE' 'FROM ${DEBIAN_IMAGE}' 'COPY coredns /coredns' 'ENTRYPOINT ["/coredns"]' ;;
    pause)
      component_image "$image" "$(pause_bin "$tag")" 'FROM scratch' 'COPY pause /pause' 'USER 65535:65535' 'ENTRYPOINT ["/pause"]' ;;
    *) die "kubeadm asks for $image, which this script does not know how to build" ;;
  esac
done

# --- 3. the node image's root -------------------------------------------------------
ctx="$work/node"
cp -a e2e/kind/node "$ctx"
mkdir -p "$ctx/bin" "$ctx/files/etc/cni/net.d"
cp "$bin"/{kubelet,kubeadm,kubectl,crictl} "$ctx/bin/"
# containerd's sandbox image is the pause image kubeadm asked for.
sed -i "s#sandbox_image = .*#sandbox_image = \"$(printf '%s\n' "${wanted[@]}" | grep /pause:)\"#" "$ctx/files/etc/containerd/config.toml"
cat >"$ctx/files/etc/cni/net.d/10-kinfer-bridge.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "kinfer-pods",
  "plugins": [
    {"type": "bridge", "bridge": "kinfer0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
JSON
log "building the node root ($NODE_IMAGE)"
"$ENGINE" build -q -t "$NODE_IMAGE-root" --build-arg "KUBERNETES_VERSION=$k8s_version" \
  --build-arg DEBIAN_IMAGE=localhost/kinfer-debian:bookworm "$ctx" >/dev/null

# --- 4. images into the node's containerd, then commit ------------------------------
# Imported without unpacking (the build container's root is itself an overlay);
# containerd unpacks each on first use, on the node's /var volume.
"$ENGINE" save -q -m --format docker-archive -o "$work/images.tar" "${wanted[@]}"
"$ENGINE" run -d --name "$builder" --privileged --entrypoint /usr/bin/containerd --stop-signal SIGTERM --tmpfs /run \
  -v "$work/images.tar:/images.tar:ro" "$NODE_IMAGE-root" >/dev/null
for _ in $(seq 60); do "$ENGINE" exec "$builder" ctr version >/dev/null 2>&1 && break; sleep 1; done
"$ENGINE" exec "$builder" ctr -n k8s.io images import --no-unpack --all-platforms --digests /images.tar >/dev/null
imported=$("$ENGINE" exec "$builder" ctr -n k8s.io images ls -q | grep -v '@sha256' | sort)
for image in "${wanted[@]}"; do grep -qx "$image" <<<"$imported" || die "$image is not in the node's containerd after import"; done
"$ENGINE" stop -t 10 "$builder" >/dev/null
"$ENGINE" commit -q -c 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' -c 'CMD []' "$builder" "$NODE_IMAGE" >/dev/null
"$ENGINE" rmi "$NODE_IMAGE-root" >/dev/null 2>&1 || true
log "node image $NODE_IMAGE: $("$ENGINE" image inspect --format '{{.Size}}' "$NODE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
echo "$NODE_IMAGE"
