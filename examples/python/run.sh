#!/usr/bin/env bash
# End-to-end run of the Python client against a real tenantd:
#   1. a virtualenv (examples/python/.venv) with requirements.txt installed;
#   2. stubs generated from proto/ (generate.sh);
#   3. a live tenantd on a free port against a fresh database (scripts/live-tenantd.sh);
#   4. walkthrough.py; then the server is stopped and the database dropped.
# Exits with walkthrough.py's status (or non-zero if a set-up step fails).
#
# Run from the repository root after building tenantd:  examples/python/run.sh
# Settings (all optional): those of scripts/live-tenantd.sh (TENANTD_BIN, TENANTD_TEST_PG_*,
# TENANTD_TEST_REDIS_URL), and PYTHON, the interpreter used to create the virtualenv (python3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
# shellcheck source=../../scripts/live-tenantd.sh
source "$root/scripts/live-tenantd.sh"
# shellcheck source=../../scripts/venv.sh
source "$root/scripts/venv.sh"

# 1. Virtualenv, reinstalled only when requirements.txt changes.
ensure_venv "$here/.venv" "$here/requirements.txt" run.sh
python=$venv_python

# 2. Stubs.
PYTHON="$python" "$here/generate.sh"

# 3. The server.
live_tenantd_start pyexample

# 4. The walkthrough.
"$python" "$here/walkthrough.py" --target "$live_addr" --token "$live_token" \
  || live_tenantd_fail "walkthrough failed (exit $?)"
