#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests and the end-to-end suite (real OpenSSH client,
# real Docker, real WebAssembly plugins, a real Kubernetes cluster). Installs what it needs when
# run as root on Debian.
#   tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
need_pkgs=""
command -v sshpass >/dev/null 2>&1 || need_pkgs="$need_pkgs sshpass"
command -v busybox >/dev/null 2>&1 || need_pkgs="$need_pkgs busybox-static"
[ -x /usr/lib/openssh/sftp-server ] || need_pkgs="$need_pkgs openssh-sftp-server"
command -v ssh >/dev/null 2>&1 || need_pkgs="$need_pkgs openssh-client"
command -v rsync >/dev/null 2>&1 || need_pkgs="$need_pkgs rsync"
command -v socat >/dev/null 2>&1 || need_pkgs="$need_pkgs socat"
command -v curl >/dev/null 2>&1 || need_pkgs="$need_pkgs curl"
# X11 forwarding: an X server on the client's side (Xvfb), xauth for the client, and an X client
# (xdpyinfo) for the test image.
command -v Xvfb >/dev/null 2>&1 || need_pkgs="$need_pkgs xvfb"
command -v xauth >/dev/null 2>&1 || need_pkgs="$need_pkgs xauth"
command -v xdpyinfo >/dev/null 2>&1 || need_pkgs="$need_pkgs x11-utils"
# HAProxy (started by the PROXY protocol tests themselves, never as a service).
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need_pkgs="$need_pkgs haproxy"
# A private registry with a password (docker.execution.auth): Debian's docker-registry, and
# htpasswd for its bcrypt password file.
command -v docker-registry >/dev/null 2>&1 || need_pkgs="$need_pkgs docker-registry"
command -v htpasswd >/dev/null 2>&1 || need_pkgs="$need_pkgs apache2-utils"
command -v stunnel4 >/dev/null 2>&1 || need_pkgs="$need_pkgs stunnel4"
# Kerberos logins: a real MIT KDC (started by the tests themselves, never as a service), its
# admin tool, and kinit for tickets.
[ -x /usr/sbin/krb5kdc ] || need_pkgs="$need_pkgs krb5-kdc"
[ -x /usr/sbin/kadmin.local ] || need_pkgs="$need_pkgs krb5-admin-server"
command -v kinit >/dev/null 2>&1 || need_pkgs="$need_pkgs krb5-user"
command -v openssl >/dev/null 2>&1 || need_pkgs="$need_pkgs openssl"
command -v python3 >/dev/null 2>&1 || need_pkgs="$need_pkgs python3"
# The C plugin examples (examples/plugins/c): Debian's clang, lld, wasi-libc and the compiler's
# WebAssembly runtime library.
command -v clang >/dev/null 2>&1 || need_pkgs="$need_pkgs clang"
command -v wasm-ld >/dev/null 2>&1 || need_pkgs="$need_pkgs lld"
[ -f /usr/lib/wasm32-wasi/libc.a ] || need_pkgs="$need_pkgs wasi-libc"
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 || need_pkgs="$need_pkgs libclang-rt-14-dev-wasm32"
# OpenSSH's sshd: the reference that russh's own tests (vendor/russh) and the benchmarks compare with.
[ -x /usr/sbin/sshd ] || need_pkgs="$need_pkgs openssh-server"
if [ -n "$need_pkgs" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_pkgs >/dev/null
  else
    echo "tests/run.sh: please install:$need_pkgs" >&2
    exit 1
  fi
fi
# asciinema (PyPI) checks that session recordings play in the real player.
python3 -m asciinema --version >/dev/null 2>&1 || python3 -m pip install --quiet "asciinema==2.4.0"
# cbor2 (PyPI) decodes `audit.format: binary` logs as ContainerSSH's decoder does.
python3 -c "import cbor2" >/dev/null 2>&1 || python3 -m pip install --quiet "cbor2==5.6.5"
# moto's server mode (PyPI) is the S3-compatible server of the `audit.storage: s3` tests.
python3 -c "import moto.server, flask, flask_cors" >/dev/null 2>&1 || python3 -m pip install --quiet "moto[server]==5.2.1"
# asyncssh and paramiko drive many logins at once, streams both ways, key-then-password
# fallbacks and window-change storms; ssh-audit judges the algorithms offered
# (pinned: its verdicts change between releases).
python3 -c "import asyncssh, paramiko" >/dev/null 2>&1 || python3 -m pip install --quiet asyncssh paramiko
# componentize-py builds the Python plugin example (examples/plugins/python-auth) in the suite.
python3 -m pip show componentize-py 2>/dev/null | grep -qx "Version: 0.25.1" || python3 -m pip install --quiet "componentize-py==0.25.1"
# mmdb-writer writes the MaxMind database the GeoIP test reads.
python3 -c "import mmdb_writer" >/dev/null 2>&1 || python3 -m pip install --quiet "mmdb-writer==0.2.7"
python3 -m pip show ssh-audit 2>/dev/null | grep -qx "Version: 3.9.0" || python3 -m pip install --quiet "ssh-audit==3.9.0"
# Console scripts installed by pip (ssh-audit) need a shim where Python is managed by pyenv.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
# sshd needs its privilege separation directory (russh's own tests start it with -i).
[ "$(id -u)" != 0 ] || mkdir -p /run/sshd
# The SSH proxy backend's tests log in to a local sshd as an ordinary user: sshd delivers
# signals only to sessions it runs with privilege separation, which root logins do not have.
[ "$(id -u)" != 0 ] || id containerssh-upstream >/dev/null 2>&1 ||
  useradd --create-home --shell /bin/sh --password "*" containerssh-upstream
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
# wit-bindgen's C generator (crates.io; about 3 minutes to build, once).
wit-bindgen --version 2>/dev/null | grep -q "^wit-bindgen-cli 0.63.0" ||
  cargo install --quiet --locked wit-bindgen-cli --version 0.63.0 --no-default-features --features c
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
docker image inspect containerssh-test/guest:5 >/dev/null 2>&1 || tests/images/build.sh containerssh-test/guest:5

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --exclude russh -- -D warnings
# The patched russh (vendor/russh): its library as strictly as ours; its tests are upstream's.
cargo clippy -p russh -- -D warnings
cargo clippy --release --target wasm32-wasip2 -p static-users -p webhook-auth -p webhook-config -p security-policy -p misbehave -p legacy-v01 -- -D warnings
log=$(mktemp)
cleanup() { rm -f "$log"; [ -z "${CONTAINERSSH_K8S_ENV:-}" ] || tests/k8s/cluster.sh stop || true; }
trap cleanup EXIT
# A real Kubernetes v1.20.2 cluster for the Kubernetes backend's tests (built from Debian's
# source once, then cached; see tests/k8s/). CONTAINERSSH_SKIP_K8S=1 leaves them out.
if [ "${CONTAINERSSH_SKIP_K8S:-}" = 1 ]; then
  echo "tests/run.sh: CONTAINERSSH_SKIP_K8S=1: the Kubernetes backend tests will be SKIPPED" >&2
else
  tests/k8s/build.sh
  tests/k8s/cluster.sh start
  export CONTAINERSSH_K8S_ENV=${CONTAINERSSH_K8S_STATE:-/tmp/cssh-k8s}/env
fi
status=0
cargo test --workspace --no-fail-fast -- --test-threads 4 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
