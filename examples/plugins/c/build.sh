#!/bin/sh
# Builds a C plugin into a WebAssembly component.
#   examples/plugins/c/build.sh auth|filter [OUT.wasm]     (default: c-ROLE.wasm here)
# Needs Debian's clang, lld, wasi-libc and libclang-rt-14-dev-wasm32, wit-bindgen's CLI
# (cargo install wit-bindgen-cli --no-default-features --features c) and containerssh (or
# CONTAINERSSH=/path/to/containerssh) to wrap the module; about a second.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
role=${1:?usage: build.sh auth|filter [OUT.wasm]}
case "$role" in
  auth) world=authenticator-plugin ;;
  filter) world=filter-plugin ;;
  *) echo "build.sh: the role is auth or filter, not $role" >&2; exit 2 ;;
esac
out=${2:-$here/c-$role.wasm}
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
bindings=$(echo "$world" | tr - _)
# 1. Bindings for the world: a header, their C code and the world's type as an object file.
wit-bindgen c --world "$world" "$here/../../../wit/v0.2" --out-dir "$gen" >"$gen/bindgen.log" 2>&1 ||
  { cat "$gen/bindgen.log" >&2; exit 1; }
# 2. A WASI preview 1 core module ("reactor": no main, exports only).
clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
  -I"$gen" -I"$here" -o "$gen/core.wasm" \
  "$here/$role.c" "$gen/$bindings.c" "$gen/${bindings}_component_type.o"
# 3. The component the gateway loads.
"${CONTAINERSSH:-containerssh}" plugin componentize "$gen/core.wasm" -o "$out"
