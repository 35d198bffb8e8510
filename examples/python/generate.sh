#!/usr/bin/env bash
# Generates Python stubs for tenantd's API from proto/ into examples/python/gen/ with
# grpcio-tools (python -m grpc_tools.protoc, which also supplies google/protobuf/*.proto).
# The vendored google.longrunning and google.rpc protos are on the import path only: their
# Python modules come from googleapis-common-protos.
#
# Usage: examples/python/generate.sh   (PYTHON=... selects the interpreter; it needs
# grpcio-tools, e.g. from `pip install -r examples/python/requirements.txt`.)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-python3}

out="$here/gen"
rm -rf "$out"
mkdir -p "$out"
mapfile -t protos < <(cd "$root/proto" && find . -name '*.proto' | sed 's|^\./||' | sort)
"$python" -m grpc_tools.protoc \
  --proto_path="$root/proto" \
  --proto_path="$root/third_party/googleapis" \
  --python_out="$out" \
  --pyi_out="$out" \
  --grpc_python_out="$out" \
  "${protos[@]}"
echo "generate: ${#protos[@]} proto files -> ${out#"$root"/}"
