#!/usr/bin/env bash
# Builds the Python example plugin as a component of the wasmvisor:plugin
# world:  ./build.sh OUT.wasm [VERSION]
# componentize-py (pinned in requirements.txt) is installed into .venv here
# the first time. VERSION (default 1) is what the plugin answers "version"
# with; the hot-reload tests build a second version with it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:?usage: build.sh OUT.wasm [VERSION]}")"
version="${2:-1}"
venv="$here/.venv"
if ! "$venv/bin/componentize-py" --version >/dev/null 2>&1; then
  if ! python3 -m venv "$venv"; then
    echo "cannot create a Python virtual environment: install python3-venv" >&2
    exit 1
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sed "s/^VERSION = \"1\"\$/VERSION = \"$version\"/" "$here/app.py" >"$work/app.py"
cd "$work"
"$venv/bin/componentize-py" -d "$here/../../wit" -w plugin componentize app -o "$out" >/dev/null
