#!/usr/bin/env bash
# Runs scripts/check-manifests.py in a virtualenv (scripts/.venv) with scripts/requirements.txt.
# The tenantd binary is $TENANTD_BIN (default target/debug/tenantd); arguments are passed on.
#
# Usage (from the repository root or anywhere): scripts/check-manifests.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."

venv="$here/.venv"
python="$venv/bin/python"
if [ ! -x "$python" ]; then
  echo "check-manifests: creating virtualenv scripts/.venv"
  "${PYTHON:-python3}" -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
wanted=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "check-manifests: installing scripts/requirements.txt"
  "$python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$wanted" > "$stamp"
fi
exec "$python" "$here/check-manifests.py" "$@"
