#!/usr/bin/env bash
# Developer loop: build the extension in build/dev and drop it beside the Python sources, so that
# `PYTHONPATH=python pytest` runs against the working tree without a reinstall.
set -euo pipefail
cd "$(dirname "$0")"
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -Dpybind11_DIR="$(python3 -c 'import pybind11; print(pybind11.get_cmake_dir())')" "$@" >/dev/null
cmake --build build/dev
cp build/dev/_core*.so python/chainrule/
