#!/usr/bin/env bash
# A real Kubernetes node next to the control plane of scripts/control-plane.sh: containerd and
# runc run the pods, a kubelet and kube-proxy built from the API server's k8s.io/kubernetes
# version, a CNI bridge for the pod network, CoreDNS for cluster DNS, metrics-server for
# `kubectl top` and the HPA, and a local image registry that containerd uses as its mirror.
#
#   scripts/node.sh build        build (or reuse) kubelet, kube-proxy, crictl, crane, coredns,
#                                metrics-server
#   scripts/node.sh check        say whether this machine can run containers (exit 0) or why not
#   scripts/node.sh net-up       create the node's bridge and address (control-plane.sh up --node
#                                does this before the API server starts, which advertises it)
#   scripts/node.sh up           start everything and wait for the node to be Ready
#   scripts/node.sh down         stop everything by pid and undo what it did to the host
#   scripts/node.sh status       what runs
#   scripts/node.sh leftovers    fail, naming each, if anything `up` made is still there
#   scripts/node.sh env          eval "$(scripts/node.sh env)": registry and node variables
#
# Usually driven by `scripts/control-plane.sh up --node` and `down`. Needs root (network
# namespaces, iptables, cgroups) and Debian's containerd, runc and containernetworking-plugins
# (installed when missing). Layout and addresses (all settable, see scripts/README.md):
#   bridge fa-br0 10.244.0.1/24 (the node's InternalIP; pods get 10.244.0.2-254)
#   Services 10.96.0.0/16 (kube-proxy, iptables mode); cluster DNS 10.96.0.10 -> CoreDNS on
#   10.244.0.1:53; metrics-server on 10.244.0.1:14443; registry on 127.0.0.1:15000, the mirror of
#   docker.io and ghcr.io; state in /tmp/fastagentic-node.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CP="$HERE/control-plane.sh"

# ---- pinned versions -------------------------------------------------------------------------
CRANE_VERSION="${FASTAGENTIC_CRANE_VERSION:-v0.22.1}"                   # github.com/google/go-containerregistry
COREDNS_VERSION="${FASTAGENTIC_COREDNS_VERSION:-v1.14.7}"               # github.com/coredns/coredns
METRICS_SERVER_VERSION="${FASTAGENTIC_METRICS_SERVER_VERSION:-v0.8.0}" # sigs.k8s.io/metrics-server
CRI_TOOLS_VERSION="${FASTAGENTIC_CRI_TOOLS_VERSION:-v1.37.0}"           # sigs.k8s.io/cri-tools
PAUSE_VERSION="3.10"

# ---- locations and addresses -----------------------------------------------------------------
CACHE_DIR="${FASTAGENTIC_CACHE_DIR:-$HOME/.cache/fastagentic}"
BIN_DIR="$CACHE_DIR/bin"
BUILD_DIR="$CACHE_DIR/build"
CP_DIR="${FASTAGENTIC_CP_DIR:-/tmp/fastagentic-cp}"
ND="${FASTAGENTIC_NODE_DIR:-/tmp/fastagentic-node}"
PKI="$CP_DIR/pki"
NODE_NAME="${FASTAGENTIC_NODE_NAME:-fastagentic-node}"
BRIDGE="${FASTAGENTIC_NODE_BRIDGE:-fa-br0}"
NODE_IP="${FASTAGENTIC_NODE_IP:-10.244.0.1}"        # the bridge's address: the node's InternalIP
POD_SUBNET="${FASTAGENTIC_POD_SUBNET:-10.244.0.0/24}"
CLUSTER_CIDR="${FASTAGENTIC_CLUSTER_CIDR:-10.244.0.0/16}"
SERVICE_CIDR="${FASTAGENTIC_SERVICE_CIDR:-10.96.0.0/16}"
DNS_SERVICE_IP="${FASTAGENTIC_DNS_SERVICE_IP:-10.96.0.10}"
REGISTRY_PORT="${FASTAGENTIC_REGISTRY_PORT:-15000}"
REGISTRY="127.0.0.1:$REGISTRY_PORT"
METRICS_SERVER_PORT="${FASTAGENTIC_METRICS_SERVER_PORT:-14443}"
COREDNS_HEALTH_PORT="${FASTAGENTIC_COREDNS_HEALTH_PORT:-10054}"
READY_TIMEOUT="${FASTAGENTIC_NODE_TIMEOUT:-180}"
GO_BUILD_P="${FASTAGENTIC_GO_BUILD_P:-2}"
CNI_BIN_DIR="/usr/lib/cni"
SOCK="$ND/containerd/containerd.sock"
PAUSE_IMAGE="$REGISTRY/fastagentic/pause:$PAUSE_VERSION"

# Started in this order, stopped in reverse.
COMPONENTS=(registry containerd kubelet kube-proxy coredns metrics-server)
# Host settings this script or the kubelet/kube-proxy change; recorded at `up`, restored at `down`.
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
  net.ipv4.conf.all.route_localnet vm.overcommit_memory kernel.panic kernel.panic_on_oops)

log() { printf '[node] %s\n' "$*" >&2; }
warn() { printf '[node] WARNING: %s\n' "$*" >&2; }
die() { printf '[node] ERROR: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/lib/go-build.sh
source "$HERE/lib/go-build.sh"
# shellcheck source=scripts/lib/procs.sh
source "$HERE/lib/procs.sh"

bin_path() {
  case "$1" in
    kubelet | kube-proxy | kubectl) "$CP" path "$1" ;;
    crane) echo "$BIN_DIR/crane-$CRANE_VERSION" ;;
    coredns) echo "$BIN_DIR/coredns-$COREDNS_VERSION" ;;
    metrics-server) echo "$BIN_DIR/metrics-server-$METRICS_SERVER_VERSION" ;;
    crictl) echo "$BIN_DIR/crictl-$CRI_TOOLS_VERSION" ;;
    containerd) command -v containerd || echo /usr/bin/containerd ;;
    *) die "unknown binary '$1'" ;;
  esac
}

# ============================================================================================
# build
# ============================================================================================

build_crane() {
  local dir="$BUILD_DIR/crane-$CRANE_VERSION"
  new_module "$dir"
  printf '\nrequire github.com/google/go-containerregistry %s\n' "$CRANE_VERSION" >>"$dir/go.mod"
  go_build crane "$dir" github.com/google/go-containerregistry/cmd/crane \
    "-X github.com/google/go-containerregistry/cmd/crane/cmd.Version=$CRANE_VERSION"
}

# CoreDNS with only the plugins a cluster DNS needs (the upstream binary compiles in ~50, with
# cloud SDKs); the plugin order below is CoreDNS' own order for these plugins.
build_coredns() {
  local dir="$BUILD_DIR/coredns-$COREDNS_VERSION"
  new_module "$dir"
  printf '\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" >>"$dir/go.mod"
  cat >"$dir/main.go" <<'EOF'
// A CoreDNS binary with the plugins of a Kubernetes cluster DNS only.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{
		"bind", "ready", "health", "errors", "log", "cache", "kubernetes", "loop", "forward",
	}
}

func main() { coremain.Run() }
EOF
  go_build coredns "$dir" . ""
}

build_metrics_server() {
  local dir="$BUILD_DIR/metrics-server-$METRICS_SERVER_VERSION"
  new_module "$dir"
  printf '\nrequire sigs.k8s.io/metrics-server %s\n' "$METRICS_SERVER_VERSION" >>"$dir/go.mod"
  go_build metrics-server "$dir" sigs.k8s.io/metrics-server/cmd/metrics-server ""
}

build_crictl() {
  local dir="$BUILD_DIR/cri-tools-$CRI_TOOLS_VERSION"
  new_module "$dir"
  printf '\nrequire sigs.k8s.io/cri-tools %s\n' "$CRI_TOOLS_VERSION" >>"$dir/go.mod"
  go_build crictl "$dir" sigs.k8s.io/cri-tools/cmd/crictl \
    "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRI_TOOLS_VERSION"
}

cmd_build() {
  mkdir -p "$BIN_DIR" "$BUILD_DIR"
  log "kubelet and kube-proxy: built by $CP from the API server's k8s.io/kubernetes version"
  "$CP" build kubelet kube-proxy
  exec 9>"$CACHE_DIR/build.lock"
  if ! flock -n 9; then
    log "another build holds $CACHE_DIR/build.lock; waiting"
    flock 9
  fi
  local name out failed=()
  for name in crane crictl coredns metrics-server; do
    out="$(bin_path "$name")"
    if [[ -x "$out" ]]; then
      log "$name: cached $out ($(human_size "$out"))"
      continue
    fi
    go_env
    "build_${name//-/_}" || failed+=("$name")
  done
  exec 9>&-
  ((${#failed[@]} == 0)) || die "could not build: ${failed[*]} (build logs under $BUILD_DIR)"
  log "node binaries ready in $BIN_DIR"
}

# ============================================================================================
# can this machine run containers?
# ============================================================================================

DEBIAN_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack iproute2 musl-tools)

install_packages() {
  local missing=()
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [[ -x "$CNI_BIN_DIR/bridge" ]] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v musl-gcc >/dev/null 2>&1 || missing+=(musl-tools)
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null 2>&1 ||
    die "missing ${missing[*]} and no apt-get to install them (needed: ${DEBIAN_PACKAGES[*]})"
  log "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# why_no_containers: prints the reason this machine cannot run a node, or nothing.
why_no_containers() {
  [[ "$(id -u)" == 0 ]] || { echo "not root (a kubelet and containerd need root)"; return; }
  [[ "$(uname -s)" == Linux ]] || { echo "not Linux"; return; }
  if [[ ! -d /sys/fs/cgroup/memory && ! -f /sys/fs/cgroup/cgroup.controllers ]]; then
    echo "no memory cgroup controller under /sys/fs/cgroup"
    return
  fi
  command -v ip >/dev/null 2>&1 || { echo "the ip command (iproute2) is missing"; return; }
  if ! ip link add fa-probe0 type bridge 2>/dev/null; then
    echo "cannot create a network bridge (no CAP_NET_ADMIN?)"
    return
  fi
  ip link del fa-probe0 2>/dev/null || true
  if ! ip netns add fa-probe-ns 2>/dev/null; then
    echo "cannot create a network namespace"
    return
  fi
  ip netns del fa-probe-ns 2>/dev/null || true
  # (a missing iptables is no reason: `up` installs it)
  if command -v iptables >/dev/null 2>&1 && ! iptables -t nat -S >/dev/null 2>&1; then
    echo "iptables does not work here (no nat table)"
    return
  fi
}

cmd_check() {
  local why
  why="$(why_no_containers)"
  if [[ -n "$why" ]]; then
    echo "this machine cannot run a real node: $why"
    return 1
  fi
  echo "this machine can run a real node (root, cgroups, bridges, network namespaces, iptables)"
}

# ============================================================================================
# host state: recorded at up, restored at down
# ============================================================================================

record_host_state() {
  [[ -f "$ND/host-state" ]] && return 0
  local s v
  : >"$ND/host-state.tmp"
  for s in "${SYSCTLS[@]}"; do
    v="$(sysctl -n "$s" 2>/dev/null)" || continue
    printf 'sysctl %s %s\n' "$s" "$v" >>"$ND/host-state.tmp"
  done
  [[ -e /var/lib/kubelet ]] && echo "existed /var/lib/kubelet" >>"$ND/host-state.tmp"
  [[ -e /var/log/containers ]] && echo "existed /var/log/containers" >>"$ND/host-state.tmp"
  [[ -e /var/log/pods ]] && echo "existed /var/log/pods" >>"$ND/host-state.tmp"
  [[ -e /run/containerd ]] && echo "existed /run/containerd" >>"$ND/host-state.tmp"
  [[ -e /etc/cni ]] && echo "existed /etc/cni" >>"$ND/host-state.tmp"
  if [[ -d /run/containerd/s ]]; then
    find /run/containerd/s -mindepth 1 -maxdepth 1 -printf 'shim %f\n' >>"$ND/host-state.tmp"
  fi
  mv "$ND/host-state.tmp" "$ND/host-state"
}

restore_host_state() {
  [[ -f "$ND/host-state" ]] || return 0
  local kind a b
  while read -r kind a b; do
    [[ "$kind" == sysctl ]] || continue
    if [[ "$(sysctl -n "$a" 2>/dev/null)" != "$b" ]]; then
      log "restoring sysctl $a=$b (was $(sysctl -n "$a" 2>/dev/null))"
      sysctl -qw "$a=$b" >/dev/null 2>&1 || warn "could not restore sysctl $a=$b"
    fi
  done <"$ND/host-state"
  local p
  for p in /var/lib/kubelet /var/log/containers /var/log/pods /etc/cni; do
    if ! grep -qx "existed $p" "$ND/host-state" && [[ -e "$p" ]]; then
      log "removing $p (created by the kubelet or containerd)"
      rm -rf "$p"
    fi
  done
  if [[ -d /run/containerd/s ]]; then
    local f
    for f in /run/containerd/s/*; do
      [[ -e "$f" ]] || continue
      grep -qx "shim ${f##*/}" "$ND/host-state" || rm -f "$f"
    done
  fi
  if ! grep -qx "existed /run/containerd" "$ND/host-state" && [[ -d /run/containerd ]]; then
    log "removing /run/containerd (created by our containerd's shims)"
    rm -rf /run/containerd
  fi
}

set_sysctl() { # name value
  [[ "$(sysctl -n "$1" 2>/dev/null)" == "$2" ]] && return 0
  log "sysctl $1=$2"
  sysctl -qw "$1=$2" >/dev/null || die "could not set sysctl $1=$2"
}

# ============================================================================================
# network: bridge, CNI, iptables
# ============================================================================================

cmd_net_up() {
  mkdir -p "$ND"
  record_host_state
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "bridge $BRIDGE with $NODE_IP/${POD_SUBNET#*/} (the node's address; pods attach to it)"
    ip link add "$BRIDGE" type bridge
  fi
  # (the listing is read whole first: `ip` flushes per line, so `ip ... | grep -q` under pipefail
  # fails with SIGPIPE when grep stops at the match before `ip` is done)
  local addrs
  addrs="$(ip -4 addr show dev "$BRIDGE")"
  [[ "$addrs" == *"inet $NODE_IP/"* ]] || ip addr add "$NODE_IP/${POD_SUBNET#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # ClusterIPs from this machine: kube-proxy DNATs them in OUTPUT, after the kernel has picked a
  # route; without a default route there is none, so give the Service range one (it goes with
  # the bridge at `down`).
  if ! ip route get "$DNS_SERVICE_IP" >/dev/null 2>&1; then
    log "route $SERVICE_CIDR dev $BRIDGE (no default route to carry ClusterIP traffic)"
    ip route add "$SERVICE_CIDR" dev "$BRIDGE"
  fi
  # br_netfilter: traffic between two pods on the bridge passes iptables, so a pod reaching a
  # Service whose endpoint is on the same bridge gets its reply un-NATed.
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null || true
  set_sysctl net.ipv4.ip_forward 1
  if [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
    set_sysctl net.bridge.bridge-nf-call-iptables 1
  else
    warn "no br_netfilter: pod-to-Service traffic to a pod on the same bridge may not work"
  fi
}

write_cni_config() {
  mkdir -p "$ND/cni/net.d" "$ND/cni/ipam"
  cat >"$ND/cni/net.d/10-fastagentic.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "fastagentic",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "hairpinMode": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$ND/cni/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
}

# Removes every iptables/ip6tables chain named KUBE-* or CNI-* and every rule that jumps to one
# (what the kubelet, kube-proxy and the CNI portmap plugin add), leaving all else as it was.
clean_iptables() {
  local tool table dump filtered
  for tool in iptables ip6tables; do
    command -v "$tool-save" >/dev/null 2>&1 || continue
    for table in filter nat mangle raw; do
      dump="$("$tool-save" -t "$table" 2>/dev/null)" || continue
      grep -Eq '(^:|-A |-j |--jump )(KUBE|CNI)-' <<<"$dump" || continue
      filtered="$(grep -Ev '^:(KUBE|CNI)-|^-A (KUBE|CNI)-|-j (KUBE|CNI)-' <<<"$dump")"
      log "$tool: removing the KUBE-*/CNI-* chains and jumps of table $table"
      "$tool-restore" -T "$table" <<<"$filtered" || warn "$tool-restore of table $table failed"
    done
  done
}

# ============================================================================================
# certificates and kubeconfigs (signed by the control plane's CA)
# ============================================================================================

# sign NAME SUBJECT EXT: a key and a certificate signed by the control plane's CA.
sign() {
  local name="$1" subj="$2" ext="$3" dir="$ND/pki"
  [[ -f "$dir/$name.crt" ]] && return 0
  mkdir -p "$dir"
  chmod 700 "$dir"
  log "certificate: $name ($subj)"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$dir/$name.key" -subj "$subj" \
    -out "$dir/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

node_kubeconfig() { # file cert-name
  local file="$1" cert="$2"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: fastagentic
  cluster:
    server: https://127.0.0.1:$(apiserver_port)
    certificate-authority: $PKI/ca.crt
users:
- name: $cert
  user:
    client-certificate: $ND/pki/$cert.crt
    client-key: $ND/pki/$cert.key
contexts:
- name: fastagentic
  context: {cluster: fastagentic, user: $cert}
current-context: fastagentic
EOF
  chmod 600 "$file"
}

apiserver_port() { echo "${FASTAGENTIC_APISERVER_PORT:-16443}"; }

gen_node_pki() {
  [[ -f "$PKI/ca.crt" && -f "$PKI/ca.key" ]] ||
    die "no control-plane CA in $PKI: start the control plane first (scripts/control-plane.sh up --node)"
  local client='keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth'
  sign kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
  sign kube-proxy "/CN=system:kube-proxy" "$client"
  sign kubelet-serving "/CN=$NODE_NAME" "keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:$NODE_NAME,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP"
  sign metrics-server "/CN=metrics-server" "keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:metrics-server.kube-system.svc,DNS:metrics-server.kube-system.svc.cluster.local,IP:$NODE_IP"
  node_kubeconfig "$ND/kubelet.kubeconfig" kubelet-client
  node_kubeconfig "$ND/kube-proxy.kubeconfig" kube-proxy
}

# ============================================================================================
# processes
# ============================================================================================

PROC_DIR="$ND"
proc_pattern() { echo "$ND|$BIN_DIR"; }

KUBECTL=""
kubectl_admin() { "$KUBECTL" --kubeconfig "$CP_DIR/admin.kubeconfig" "$@"; }
crictl() { "$(bin_path crictl)" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" --timeout 30s "$@"; }

# ============================================================================================
# components
# ============================================================================================

start_registry() {
  start_process registry "$(bin_path crane)" registry serve --address "$REGISTRY"
  wait_for "the image registry on http://$REGISTRY" registry curl -fsS "http://$REGISTRY/v2/"
}

# The pause image every pod's sandbox runs: a static C program (sleeps, reaps children, exits
# on SIGINT/SIGTERM), built here because no registry outside is reachable.
push_pause_image() {
  if "$(bin_path crane)" digest "$PAUSE_IMAGE" >/dev/null 2>&1; then return 0; fi
  log "pause image $PAUSE_IMAGE (static, from scripts/images/pause.c)"
  "$HERE/images.sh" pause "$PAUSE_IMAGE"
}

start_containerd() {
  mkdir -p "$ND/containerd/root" "$ND/containerd/state"
  cat >"$ND/containerd/config.toml" <<EOF
version = 2
root = "$ND/containerd/root"
state = "$ND/containerd/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = "$SOCK.debug"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root lacks CAP_SYS_RESOURCE on these machines: runc may only raise oom_score_adj
  restrict_oom_score_adj = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$ND/cni/net.d"
  # The local registry answers for docker.io and ghcr.io: images are pulled as users name them
  # (imagePullPolicy Always included), from what scripts/images.sh pushed.
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["http://$REGISTRY"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."ghcr.io"]
    endpoint = ["http://$REGISTRY"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$REGISTRY"]
    endpoint = ["http://$REGISTRY"]
EOF
  start_process containerd "$(bin_path containerd)" --config "$ND/containerd/config.toml" --log-level warn
  wait_for "containerd on $SOCK" containerd ctr --address "$SOCK" version
}

start_kubelet() {
  mkdir -p "$ND/kubelet" "$ND/pod-logs"
  cat >"$ND/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 only on these machines, and no systemd
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $ND/pki/kubelet-serving.crt
tlsPrivateKeyFile: $ND/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: cluster.local
podLogsDir: $ND/pod-logs
failSwapOn: false
serializeImagePulls: false
# a test node on a shared disk: evict only when the disk is really full, never collect images
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
  start_process kubelet "$(bin_path kubelet)" --config="$ND/kubelet.yaml" \
    --kubeconfig="$ND/kubelet.kubeconfig" --root-dir="$ND/kubelet" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
  wait_for "node $NODE_NAME to be Ready" kubelet \
    kubectl_admin wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
}

start_kube_proxy() {
  cat >"$ND/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
# NodePorts on the node's own address only, not on every address of this machine
nodePortAddresses: [primary]
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clientConnection:
  kubeconfig: $ND/kube-proxy.kubeconfig
# leave the host's conntrack sysctls alone
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start_process kube-proxy "$(bin_path kube-proxy)" --config="$ND/kube-proxy.yaml" --v=1
  wait_for "kube-proxy /healthz" kube-proxy curl -fsS http://127.0.0.1:10256/healthz
}

# kube-dns and metrics-server run on the host; a Service without selector plus an EndpointSlice
# to the node's address gives each its in-cluster name.
host_service() { # namespace name cluster-ip|"" port-lines...
  local ns="$1" name="$2" ip="$3" ports="$4" eps_ports="$5"
  kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata:
  name: $name
  namespace: $ns
  labels: {app.kubernetes.io/managed-by: fastagentic-node, k8s-app: $name}
spec:
  ${ip:+clusterIP: $ip}
  ports:
$ports
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $name-host
  namespace: $ns
  labels:
    kubernetes.io/service-name: $name
    endpointslice.kubernetes.io/managed-by: fastagentic-node
addressType: IPv4
endpoints:
- addresses: [$NODE_IP]
  conditions: {ready: true}
  nodeName: $NODE_NAME
ports:
$eps_ports
EOF
}

start_coredns() {
  cat >"$ND/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:$COREDNS_HEALTH_PORT
    ready 127.0.0.1:$((COREDNS_HEALTH_PORT + 1))
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $CP_DIR/admin.kubeconfig fastagentic
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    cache 30
    loop
    forward . /etc/resolv.conf
}
EOF
  host_service kube-system kube-dns "$DNS_SERVICE_IP" \
    "  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}" \
    "- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}"
  start_process coredns "$(bin_path coredns)" -conf "$ND/Corefile"
  wait_for "CoreDNS ready (Kubernetes API synced)" coredns \
    curl -fsS "http://127.0.0.1:$((COREDNS_HEALTH_PORT + 1))/ready"
}

start_metrics_server() {
  host_service kube-system metrics-server "" \
    "  - {name: https, port: 443, protocol: TCP, targetPort: $METRICS_SERVER_PORT}" \
    "- {name: https, port: $METRICS_SERVER_PORT, protocol: TCP}"
  start_process metrics-server "$(bin_path metrics-server)" \
    --kubeconfig="$CP_DIR/admin.kubeconfig" \
    --authentication-kubeconfig="$CP_DIR/admin.kubeconfig" \
    --authorization-kubeconfig="$CP_DIR/admin.kubeconfig" \
    --bind-address="$NODE_IP" --secure-port="$METRICS_SERVER_PORT" \
    --tls-cert-file="$ND/pki/metrics-server.crt" --tls-private-key-file="$ND/pki/metrics-server.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=InternalIP \
    --metric-resolution=10s --kubelet-request-timeout=5s --v=1
  local ca
  ca="$(base64 -w0 <"$PKI/ca.crt")"
  kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
  labels: {app.kubernetes.io/managed-by: fastagentic-node}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: $ca
  service: {name: metrics-server, namespace: kube-system, port: 443}
EOF
  wait_for "the metrics.k8s.io API (metrics-server)" metrics-server \
    kubectl_admin wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout=2s
}

cmd_up() {
  local why
  [[ "$(id -u)" == 0 ]] || die "the node needs root (containerd, network namespaces, iptables, cgroups); use the kwok path instead (scripts/control-plane.sh up)"
  install_packages
  why="$(why_no_containers)"
  [[ -z "$why" ]] || die "this machine cannot run a real node: $why. The kwok path (scripts/control-plane.sh up, without --node) needs none of it."
  cmd_build
  KUBECTL="$(bin_path kubectl)"
  [[ -f "$CP_DIR/node-mode" ]] ||
    die "the control plane was not started for a real node: run scripts/control-plane.sh up --node"
  kubectl_admin get --raw /readyz >/dev/null 2>&1 || die "the control plane is not up (scripts/control-plane.sh up --node)"
  cmd_net_up
  set_sysctl net.ipv4.conf.all.route_localnet 1 # kube-proxy sets it too (localhost NodePorts)
  gen_node_pki
  write_cni_config
  start_registry
  push_pause_image
  start_containerd
  start_kubelet
  start_kube_proxy
  start_coredns
  start_metrics_server
  log "node $NODE_NAME Ready ($NODE_IP); images: push to $REGISTRY (mirror of docker.io and ghcr.io)"
}

# pods_on_node: sandboxes and containers still known to containerd.
cmd_down() {
  KUBECTL="$(bin_path kubectl)"
  local api=0
  if [[ -f "$CP_DIR/admin.kubeconfig" ]] && kubectl_admin get --raw /readyz >/dev/null 2>&1; then api=1; fi
  if ((api)) && kubectl_admin get node "$NODE_NAME" >/dev/null 2>&1; then
    log "deleting node $NODE_NAME from the API (its pods are removed below)"
    kubectl_admin delete node "$NODE_NAME" --wait=false >/dev/null 2>&1 || true
  fi
  if ((api)); then
    kubectl_admin delete apiservice v1beta1.metrics.k8s.io --ignore-not-found >/dev/null 2>&1 || true
  fi
  stop metrics-server
  stop coredns
  stop kube-proxy
  if [[ -x "$(bin_path kube-proxy)" ]] && [[ -f "$ND/kube-proxy.yaml" ]]; then
    "$(bin_path kube-proxy)" --cleanup --config="$ND/kube-proxy.yaml" >>"$ND/kube-proxy.log" 2>&1 || true
  fi
  stop kubelet 30
  if running containerd; then
    if [[ -x "$(bin_path crictl)" ]]; then
      log "removing every pod sandbox (crictl rmp -fa: stops containers, tears down their network)"
      crictl rmp -fa >>"$ND/crictl.log" 2>&1 || warn "crictl rmp -fa failed (log $ND/crictl.log)"
    fi
    stop containerd 20
  fi
  # shims outlive containerd; ours carry its socket address
  local pids
  pids="$(pgrep -f -- "-address $SOCK" || true)"
  if [[ -n "$pids" ]]; then
    log "killing leftover containerd shims: $(tr '\n' ' ' <<<"$pids")"
    # shellcheck disable=SC2086 # a list of pids
    kill -KILL $pids 2>/dev/null || true
  fi
  stop registry
  # mounts below the state dir (kubelet root-dir bind mount, volumes, overlay rootfs, shm)
  local m
  if [[ -d "$ND" ]]; then
    while read -r m; do
      [[ -n "$m" ]] || continue
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || warn "could not unmount $m"
    done < <(awk -v d="$ND" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  fi
  # network namespaces CNI pods left (kubelet gone before their sandboxes)
  local ns
  while read -r ns _; do
    [[ "$ns" == cni-* ]] || continue
    log "removing network namespace $ns"
    ip netns delete "$ns" 2>/dev/null || true
  done < <(ip netns list 2>/dev/null)
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "removing bridge $BRIDGE and its veths"
    local veth
    while read -r veth; do
      ip link delete "$veth" 2>/dev/null || true
    done < <(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }')
    ip link delete "$BRIDGE" 2>/dev/null || true
  fi
  clean_iptables
  # the kubelet's cgroups, deepest first
  local c
  for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$c" ]] || continue
    find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || warn "could not remove all of $c"
  done
  restore_host_state
  if [[ -d "$ND" ]]; then
    rm -rf "$ND"
    log "stopped; removed $ND"
  else
    log "nothing to remove ($ND does not exist)"
  fi
}

cmd_status() {
  local c any=0
  printf 'node state dir: %s\n' "$ND"
  for c in "${COMPONENTS[@]}"; do
    if running "$c"; then
      printf '  %-16s running (pid %s)\n' "$c" "$(cat "$(pid_file "$c")")"
      any=1
    elif [[ -f "$(pid_file "$c")" ]]; then
      printf '  %-16s NOT running (stale pid file; see %s)\n' "$c" "$ND/$c.log"
    else
      printf '  %-16s stopped\n' "$c"
    fi
  done
  if ((any)); then
    KUBECTL="$(bin_path kubectl)"
    kubectl_admin get node "$NODE_NAME" -o wide 2>/dev/null || true
  fi
}

# Fails, naming each, when anything `up` makes is still there: our processes (kubelet,
# containerd and its shims, kube-proxy, CoreDNS, metrics-server, registry, any container), the
# bridge and its veths, CNI network namespaces, KUBE-*/CNI-* iptables chains, mounts below the
# state dir, the kubelet's cgroups.
cmd_leftovers() {
  local found=0 out
  report() {
    found=1
    printf '[node] LEFT BEHIND: %s\n' "$1" >&2
    [[ -z "${2:-}" ]] || printf '%s\n' "$2" | while IFS= read -r line; do printf '    %s\n' "$line" >&2; done
  }
  out="$(pgrep -af -- "$ND|$BIN_DIR/(kubelet|kube-proxy|coredns|metrics-server|crane)|containerd-shim" || true)"
  [[ -z "$out" ]] || report "processes" "$out"
  ip link show "$BRIDGE" >/dev/null 2>&1 && report "bridge $BRIDGE"
  # a pod's veth outlives the bridge only if its network namespace does: it then has no master
  out="$(ip -o link show type veth 2>/dev/null | grep -v ' master ' || true)"
  [[ -z "$out" ]] || report "veth links" "$out"
  out="$(ip netns list 2>/dev/null | grep '^cni-' || true)"
  [[ -z "$out" ]] || report "network namespaces" "$out"
  out="$( (iptables-save 2>/dev/null; ip6tables-save 2>/dev/null) | grep -E '^:(KUBE|CNI)-' || true)"
  [[ -z "$out" ]] || report "iptables chains" "$out"
  out="$(awk -v d="$ND" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo)"
  [[ -z "$out" ]] || report "mounts" "$out"
  out="$(ls -d /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods 2>/dev/null || true)"
  [[ -z "$out" ]] || report "cgroups" "$out"
  [[ -d "$ND" ]] && report "state directory $ND"
  if ((found)); then
    return 1
  fi
  log "nothing left: no node process or container, no $BRIDGE, veth, cni-* namespace, KUBE-*/CNI-* chain, mount or kubepods cgroup"
}

cmd_env() {
  printf 'export FASTAGENTIC_REGISTRY=%q\n' "$REGISTRY"
  printf 'export FASTAGENTIC_NODE_NAME=%q\n' "$NODE_NAME"
  printf 'export FASTAGENTIC_NODE_DIR=%q\n' "$ND"
  printf 'export FASTAGENTIC_CRANE=%q\n' "$(bin_path crane)"
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }

main() {
  local sub="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$sub" in
    build) cmd_build ;;
    check) cmd_check ;;
    net-up) cmd_net_up ;;
    up) cmd_up ;;
    down) cmd_down ;;
    leftovers) cmd_leftovers ;;
    status) cmd_status ;;
    env) cmd_env ;;
    path)
      [[ $# -eq 1 ]] || die "usage: $0 path NAME"
      bin_path "$1"
      ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
