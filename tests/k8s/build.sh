#!/usr/bin/env bash
# Builds a real Kubernetes v1.20.2 control plane and kubelet offline, from Debian's own source
# package (its orig tarball carries vendor/), plus the pause image the kubelet's dockershim needs.
# No registry is used. The result is cached; a second run with a complete cache does nothing.
#   tests/k8s/build.sh            (cache: $CONTAINERSSH_K8S_CACHE or /var/cache/containerssh-test/k8s-1.20.2)
# Needs root on Debian 12 (installs golang-go, rsync, jq, etcd-server, gcc).
set -euo pipefail
cache=${CONTAINERSSH_K8S_CACHE:-/var/cache/containerssh-test/k8s-1.20.2}
bins="kube-apiserver kubelet kube-scheduler kube-controller-manager"
complete=1
for b in $bins; do [ -x "$cache/bin/$b" ] || complete=0; done
if [ "$complete" = 1 ]; then
  echo "k8s build: cached in $cache/bin"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "tests/k8s/build.sh: needs root (apt-get) to build Kubernetes into $cache" >&2
  exit 1
fi
# Debian's source archive, for `apt-get source`.
src_list=/etc/apt/sources.list.d/containerssh-test-debsrc.sources
if [ ! -f "$src_list" ]; then
  cat >"$src_list" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go rsync jq etcd-server gcc make >/dev/null

work="$cache/src"
mkdir -p "$work" "$cache/bin"
cd "$work"
if ! ls kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
  apt-get source --download-only kubernetes >/dev/null
fi
orig=$(ls kubernetes_*.orig.tar.gz | head -n 1)
if [ ! -d kubernetes-1.20.2 ]; then
  tar xzf "$orig"
fi
cd kubernetes-1.20.2
mkdir -p .go/src/k8s.io
ln -sfn ../../.. .go/src/k8s.io/kubernetes
started=$(date +%s)
# The generators and the Go build must not reach any network: vendor/ only.
GOPATH=$PWD/.go CGO_ENABLED=0 GOFLAGS=-mod=vendor GOPROXY=off GO111MODULE=on \
  nice make WHAT="cmd/kube-apiserver cmd/kubelet cmd/kube-scheduler cmd/kube-controller-manager" >"$cache/build.log" 2>&1 \
  || { tail -n 40 "$cache/build.log" >&2; exit 1; }
for b in $bins; do
  install -m 0755 "_output/local/bin/linux/amd64/$b" "$cache/bin/$b"
done
# The pause container, from the same source tree.
gcc -Os -static -DVERSION=3.4.1 -o "$cache/bin/pause" build/pause/linux/pause.c
echo "k8s build: built in $(( $(date +%s) - started ))s into $cache/bin"
# The source tree and Go cache (about 2 GB) are not needed any more.
cd / && rm -rf "$work/kubernetes-1.20.2"
