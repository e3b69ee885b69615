#!/usr/bin/env bash
# A real single-node Kubernetes v1.20.2 cluster on 127.0.0.1 for the Kubernetes backend's tests:
# etcd, kube-apiserver (TLS from a private test CA, token authentication, RBAC),
# kube-controller-manager, kube-scheduler and a kubelet running pods through dockershim on a
# private Docker engine of its own (the machine's engine is left alone).
#   tests/k8s/cluster.sh start     # prints nothing but progress; writes $state/env
#   tests/k8s/cluster.sh stop
# Binaries come from tests/k8s/build.sh. State: $CONTAINERSSH_K8S_STATE (default /tmp/cssh-k8s).
# After `start`, $state/env holds: K8S_API (https URL), K8S_CA (CA file), K8S_TOKEN_FILE (the
# token of the gateway's service account from examples/kubernetes/rbac.yaml: pods and
# pods/exec in namespace K8S_NAMESPACE only), K8S_ADMIN_TOKEN, K8S_KUBECONFIG (admin),
# K8S_NAMESPACE, K8S_DOCKER_HOST (the kubelet's engine), K8S_IMAGE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${CONTAINERSSH_K8S_CACHE:-/var/cache/containerssh-test/k8s-1.20.2}
state=${CONTAINERSSH_K8S_STATE:-/tmp/cssh-k8s}
bin=$cache/bin
# Short paths: containerd's socket lives under the exec root and unix socket paths are short.
run=/run/cssh-k8s
namespace=containerssh-sessions
image=containerssh-test/guest:5
api_port=16443
export PATH="$bin:$PATH"

log() { echo "k8s cluster: $*" >&2; }

wait_for() { # description, seconds, command...
  local what=$1 seconds=$2
  shift 2
  local i
  for ((i = 0; i < seconds * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "$what did not come up within ${seconds}s; logs are in $state/logs"
  tail -n 30 "$state"/logs/*.log >&2 || true
  return 1
}

stop() {
  for p in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    if [ -f "$state/$p.pid" ]; then
      kill "$(cat "$state/$p.pid")" 2>/dev/null || true
    fi
  done
  sleep 1
  if [ -S "$run/docker.sock" ]; then
    # Pods the kubelet left: their containers go with the engine's data below.
    local ids
    ids=$(DOCKER_HOST=unix://$run/docker.sock docker ps -aq 2>/dev/null || true)
    [ -z "$ids" ] || DOCKER_HOST=unix://$run/docker.sock docker rm -f $ids >/dev/null 2>&1 || true
  fi
  if [ -f "$state/dockerd.pid" ]; then
    local pid
    pid=$(cat "$state/dockerd.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  for p in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd dockerd; do
    [ -f "$state/$p.pid" ] && kill -9 "$(cat "$state/$p.pid")" 2>/dev/null || true
    rm -f "$state/$p.pid"
  done
  # The kubelet bind-mounts pod volumes under its root directory.
  if [ -d "$state/kubelet" ]; then
    { grep " $state/kubelet" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
}

certificates() {
  local pki=$state/pki
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=containerssh-test-k8s-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >"$pki/ext"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$pki/ext" -out "$pki/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

start_docker() {
  # The kubelet gives pod sandboxes oom_score_adj -998, which needs CAP_SYS_RESOURCE; this
  # machine may lack it. The wrapper clamps negative values and then runs the real runc.
  cat >"$state/runc-nooom" <<'EOF'
#!/bin/sh
bundle=""; prev=""
for a in "$@"; do
  case "$prev" in --bundle|-b) bundle="$a";; esac
  case "$a" in --bundle=*) bundle="${a#--bundle=}";; esac
  prev="$a"
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
  jq 'if (.process.oomScoreAdj // 0) < 0 then .process.oomScoreAdj = 0 else . end' "$bundle/config.json" >"$bundle/config.json.tmp" \
    && mv "$bundle/config.json.tmp" "$bundle/config.json"
fi
exec /usr/sbin/runc "$@"
EOF
  chmod 0755 "$state/runc-nooom"
  local driver
  driver=$(docker info --format '{{.Driver}}' 2>/dev/null || echo overlay2)
  mkdir -p "$run" "$cache/docker"
  # Its own (empty) daemon.json: the machine's engine's settings would clash with the flags.
  echo '{}' >"$state/daemon.json"
  dockerd --config-file "$state/daemon.json" --host "unix://$run/docker.sock" --pidfile "$state/dockerd.pid" \
    --data-root "$cache/docker" --exec-root "$run/exec" --storage-driver "$driver" \
    --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
    --add-runtime "nooom=$state/runc-nooom" --default-runtime nooom \
    >"$state/logs/dockerd.log" 2>&1 &
  wait_for "the kubelet's Docker engine" 30 docker -H "unix://$run/docker.sock" info
  export DOCKER_HOST=unix://$run/docker.sock
  if ! docker image inspect k8s.gcr.io/pause:3.2 >/dev/null 2>&1; then
    local root
    root=$(mktemp -d)
    cp "$bin/pause" "$root/pause"
    tar -C "$root" -c pause | docker import -c 'ENTRYPOINT ["/pause"]' - k8s.gcr.io/pause:3.2 >/dev/null
    rm -rf "$root"
  fi
  docker image inspect "$image" >/dev/null 2>&1 || "$here/../images/build.sh" "$image" >/dev/null
}

kubeconfig() { # file, token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://127.0.0.1:$api_port", certificate-authority: "$state/pki/ca.crt"}
users:
- name: u
  user: {token: "$2"}
contexts:
- name: test
  context: {cluster: test, user: u}
current-context: test
EOF
}

# Installs what the cluster needs from Debian's packages (when root).
dependencies() {
  local missing=""
  command -v etcd >/dev/null 2>&1 || missing="$missing etcd-server"
  command -v jq >/dev/null 2>&1 || missing="$missing jq"
  command -v curl >/dev/null 2>&1 || missing="$missing curl"
  command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
  command -v kubectl >/dev/null 2>&1 || missing="$missing kubernetes-client"
  command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    log "please install:$missing"
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
}

start() {
  dependencies
  for b in kube-apiserver kubelet kube-scheduler kube-controller-manager pause; do
    [ -x "$bin/$b" ] || { log "$bin/$b is missing; run tests/k8s/build.sh first"; exit 1; }
  done
  stop
  rm -rf "$state"
  mkdir -p "$state/logs"
  certificates
  local admin_token
  admin_token=admin-$(openssl rand -hex 16)
  printf '%s,admin,admin,system:masters\n' "$admin_token" >"$state/tokens.csv"
  kubeconfig "$state/admin.kubeconfig" "$admin_token"
  start_docker

  etcd --name cssh --data-dir "$state/etcd" \
    --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster cssh=http://127.0.0.1:23800 >"$state/logs/etcd.log" 2>&1 &
  echo $! >"$state/etcd.pid"

  kube-apiserver --etcd-servers=http://127.0.0.1:23790 --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --secure-port=$api_port --tls-cert-file="$state/pki/apiserver.crt" --tls-private-key-file="$state/pki/apiserver.key" \
    --token-auth-file="$state/tokens.csv" --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$state/pki/sa.pub" \
    --service-account-signing-key-file="$state/pki/sa.key" --service-cluster-ip-range=10.96.0.0/24 \
    --enable-admission-plugins=NamespaceLifecycle --disable-admission-plugins=ServiceAccount \
    --kubelet-preferred-address-types=Hostname \
    >"$state/logs/kube-apiserver.log" 2>&1 &
  echo $! >"$state/kube-apiserver.pid"
  wait_for "kube-apiserver" 90 curl -sf --cacert "$state/pki/ca.crt" -H "Authorization: Bearer $admin_token" \
    "https://127.0.0.1:$api_port/readyz"

  local k="kubectl --kubeconfig=$state/admin.kubeconfig"
  kube-controller-manager --kubeconfig="$state/admin.kubeconfig" --bind-address=127.0.0.1 --port=0 --leader-elect=false \
    --authentication-kubeconfig="$state/admin.kubeconfig" --authorization-kubeconfig="$state/admin.kubeconfig" \
    --service-account-private-key-file="$state/pki/sa.key" --use-service-account-credentials=false \
    --controllers='*,-nodeipam,-service,-route,-cloud-node-lifecycle' \
    >"$state/logs/kube-controller-manager.log" 2>&1 &
  echo $! >"$state/kube-controller-manager.pid"
  kube-scheduler --kubeconfig="$state/admin.kubeconfig" --authentication-kubeconfig="$state/admin.kubeconfig" \
    --authorization-kubeconfig="$state/admin.kubeconfig" --bind-address=127.0.0.1 --port=0 --leader-elect=false \
    >"$state/logs/kube-scheduler.log" 2>&1 &
  echo $! >"$state/kube-scheduler.pid"

  cat >"$state/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
makeIPTablesUtilChains: false
evictionHard: {}
imageGCHighThresholdPercent: 100
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
EOF
  kubelet --config="$state/kubelet.yaml" --kubeconfig="$state/admin.kubeconfig" --hostname-override=localhost \
    --root-dir="$state/kubelet" --cert-dir="$state/kubelet-pki" --container-runtime=docker \
    --docker-endpoint="unix://$run/docker.sock" --pod-infra-container-image=k8s.gcr.io/pause:3.2 \
    >"$state/logs/kubelet.log" 2>&1 &
  echo $! >"$state/kubelet.pid"
  node_ready() { $k get node localhost -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True; }
  wait_for "the node" 120 node_ready

  # The gateway's identity and rights exactly as the example deploys them: a service account
  # that may manage pods (and exec into them) in the session namespace, nothing else.
  $k apply -f "$here/../../examples/kubernetes/rbac.yaml" >/dev/null
  sa_token() {
    local secret
    secret=$($k -n containerssh get serviceaccount containerssh -o jsonpath='{.secrets[0].name}')
    [ -n "$secret" ] || return 1
    $k -n containerssh get secret "$secret" -o jsonpath='{.data.token}' | base64 -d >"$state/gateway.token"
    [ -s "$state/gateway.token" ]
  }
  wait_for "the gateway's service account token" 60 sa_token
  cat >"$state/env" <<EOF
K8S_API=https://127.0.0.1:$api_port
K8S_CA=$state/pki/ca.crt
K8S_TOKEN_FILE=$state/gateway.token
K8S_ADMIN_TOKEN=$admin_token
K8S_NAMESPACE=$namespace
K8S_DOCKER_HOST=unix://$run/docker.sock
K8S_IMAGE=$image
K8S_KUBECONFIG=$state/admin.kubeconfig
EOF
  log "ready: https://127.0.0.1:$api_port ($($k version -o json 2>/dev/null | jq -r .serverVersion.gitVersion))"
}

case "${1:-}" in
  start) start ;;
  stop) stop; log "stopped" ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
