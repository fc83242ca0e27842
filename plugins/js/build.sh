#!/usr/bin/env bash
# Builds the JavaScript example plugin as a component of the wasmvisor:plugin
# world:  ./build.sh OUT.wasm [VERSION]
# componentize-js (pinned in package.json and package-lock.json, with the
# preview2-shim it imports at build time but does not declare) is installed
# into node_modules here the first time. VERSION (default 1) is
# what the plugin answers "version" with; the hot-reload tests build a
# second version with it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:?usage: build.sh OUT.wasm [VERSION]}")"
version="${2:-1}"
cd "$here"
if [ ! -x node_modules/.bin/componentize-js ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sed "s/^const VERSION = \"1\";\$/const VERSION = \"$version\";/" app.js >"$work/app.js"
node_modules/.bin/componentize-js "$work/app.js" --wit ../../wit -n plugin -o "$out" >/dev/null
