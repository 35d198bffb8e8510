#!/usr/bin/env bash
# Runs scripts/check-manifests.py in a virtualenv (scripts/.venv) with scripts/requirements.txt.
# The tenantd binary is $TENANTD_BIN (default target/debug/tenantd); arguments are passed on.
#
# Usage (from the repository root or anywhere): scripts/check-manifests.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
# shellcheck source=venv.sh
source "$here/venv.sh"
ensure_venv "$here/.venv" "$here/requirements.txt" check-manifests
exec "$venv_python" "$here/check-manifests.py" "$@"
