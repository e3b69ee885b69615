#!/bin/sh
# Quick start: builds the demo image and the gateway, then serves on 0.0.0.0:2222.
#   ./examples/quickstart/run.sh        then, elsewhere:  ssh -p 2222 demo@localhost  (password: demo)
set -eu
cd "$(dirname "$0")/../.."
if ! command -v busybox >/dev/null 2>&1 || [ ! -x /usr/lib/openssh/sftp-server ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static openssh-sftp-server openssh-client >/dev/null
  else
    echo "please install: busybox-static openssh-sftp-server openssh-client" >&2; exit 1
  fi
fi
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
docker image inspect containerssh/demo:1 >/dev/null 2>&1 || tests/images/build.sh containerssh/demo:1
mkdir -p target/quickstart
exec cargo run --release -p containerssh -- --config examples/quickstart/config.yaml
