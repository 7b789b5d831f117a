#!/usr/bin/env bash
# mypy on the library as it is installed: gpunet/ with kernels/ as gpunet.kernels (the package-dir
# mapping of pyproject.toml), laid out as symlinks in a temporary folder so that mypy sees the
# installed module names. Settings: [tool.mypy] in pyproject.toml.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="$(command -v "${PYTHON:-python3}")"
case "$python" in /*) ;; *) python="$PWD/$python" ;; esac
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/gpunet"
for entry in "$root"/gpunet/*; do ln -s "$entry" "$tree/gpunet/$(basename "$entry")"; done
ln -s "$root/kernels" "$tree/gpunet/kernels"
cd "$tree"
"$python" -m mypy --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" -p gpunet "$@"
