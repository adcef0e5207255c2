#!/usr/bin/env bash
# Developer loop: build the extension in build/dev and drop it beside the Python sources, so that
# `PYTHONPATH=python pytest` runs against the working tree without a reinstall.
set -euo pipefail
cd "$(dirname "$0")"
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -Dpybind11_DIR="$(python3 -c 'import pybind11; print(pybind11.get_cmake_dir())')" "$@" >/dev/null
cmake --build build/dev
# Copy, then rename into place: a process that has the old module mapped (a benchmark running
# meanwhile) keeps its file instead of crashing on one rewritten under it.
for so in build/dev/_core*.so; do
  cp "$so" "python/chainrule/.$(basename "$so").tmp"
  mv -f "python/chainrule/.$(basename "$so").tmp" "python/chainrule/$(basename "$so")"
done
