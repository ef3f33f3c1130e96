#!/usr/bin/env bash
# Generates the Python SDK's stubs (clients/python) of the PUBLIC protos only, into OUT_DIR, as the package
# agentplatform_client._proto. Usage: scripts/gen_client_protos.sh PYTHON OUT_DIR
#
# Why a copy under the SDK's own package, not the server's `agentplatform` package: the SDK must install alone
# (grpcio and protobuf only), and no file may be shipped by two distributions in one venv. The proto file names
# stay as they are (agentplatform/runs/v1/runs.proto ...), so both copies register identical descriptors in
# protobuf's pool (an identical file added twice is accepted) and share one message class per message; only the
# Python imports between the generated modules are rewritten to point inside the SDK.
set -euo pipefail
python=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
mkdir -p "$2"; out=$(cd "$2" && pwd)
# The public API: what the gateway routes. The internal packages (agentplatform/*/internal/v1) stay out.
mapfile -t protos < <(cd protos && find agentplatform -path '*/internal/*' -prune -o -name '*.proto' -print | sort)
(cd protos && "$python" -m grpc_tools.protoc -I . \
  --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
  "${protos[@]}")
# The imports between generated modules, and the module name each registers its classes under.
find "$out/agentplatform" \( -name '*.py' -o -name '*.pyi' \) | sort | while read -r file; do
  sed -i -E \
    -e 's/^from agentplatform\./from agentplatform_client._proto.agentplatform./' \
    -e "s/'(agentplatform\.[a-z0-9_.]+_pb2)'/'agentplatform_client._proto.\1'/" \
    "$file"
done
find "$out" -type d -exec touch {}/__init__.py \;
