#!/usr/bin/env bash
# Generates the Python stubs for every proto under protos/ into OUT_DIR.
# Usage: scripts/gen_protos.sh PYTHON OUT_DIR
set -euo pipefail
python=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
mkdir -p "$2"; out=$(cd "$2" && pwd)
# Not protos/google/: the vendored google.api HTTP annotations, whose Python modules googleapis-common-protos ships.
mapfile -t protos < <(cd protos && find agentplatform -name '*.proto' | sort)
(cd protos && "$python" -m grpc_tools.protoc -I . \
  --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
  "${protos[@]}")
# Regular packages (with __init__.py) so setuptools and type checkers find them.
find "$out/agentplatform" -type d -exec touch {}/__init__.py \;
