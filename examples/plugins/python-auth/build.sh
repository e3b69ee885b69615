#!/bin/sh
# Builds the Python auth plugin into a WebAssembly component.
#   examples/plugins/python-auth/build.sh [OUT.wasm]     (default: python-auth.wasm here)
# Needs componentize-py (python3 -m pip install componentize-py); about 10 s.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/python-auth.wasm}
cd "$here"
componentize-py -d ../../../wit/v0.2 -w authenticator-plugin componentize app -p . -o "$out"
