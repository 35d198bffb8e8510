#!/usr/bin/env bash
# End-to-end run of the Python client against a real tenantd:
#   1. a virtualenv (examples/python/.venv) with requirements.txt installed;
#   2. stubs generated from proto/ (generate.sh);
#   3. a live tenantd on a free port against a fresh database (scripts/live-tenantd.sh);
#   4. walkthrough.py; then the server is stopped and the database dropped.
#   5. the same over mutual TLS: a test CA, server and client certificates made with openssl,
#      `tenantd serve` with TENANTD_TLS_*, walkthrough.py --tls-ca-file/--tls-cert-file, on a
#      fresh database (the walkthrough creates fixed slugs).
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

live_tenantd_stop

# 5. The same over mutual TLS, with certificates made here: the server's for localhost, the
#    client's from the same CA.
command -v openssl >/dev/null || { echo "run.sh: openssl is needed for the TLS pass (apt-get install openssl)" >&2; exit 2; }
tls=$(mktemp -d)
live_remove_on_exit+=("$tls")
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=run.sh test CA" \
  -keyout "$tls/ca.key" -out "$tls/ca.crt" -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign 2>/dev/null
for leaf in server client; do
  usage=$([ "$leaf" = server ] && echo serverAuth || echo clientAuth)
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$tls/$leaf.key" -out "$tls/$leaf.csr" 2>/dev/null
  openssl x509 -req -in "$tls/$leaf.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial -days 1 \
    -extfile <(printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=%s\n' "$usage") -out "$tls/$leaf.crt" 2>/dev/null
done
LIVE_TENANTD_ENV="TENANTD_TLS_CERT_FILE=$tls/server.crt TENANTD_TLS_KEY_FILE=$tls/server.key TENANTD_TLS_CLIENT_CA_FILE=$tls/ca.crt" \
  live_tenantd_start pyexample_tls
"$python" "$here/walkthrough.py" --target "$live_addr" --token "$live_token" \
  --tls-ca-file "$tls/ca.crt" --tls-cert-file "$tls/client.crt" --tls-key-file "$tls/client.key" \
  --tls-server-name localhost \
  || live_tenantd_fail "walkthrough over mutual TLS failed (exit $?)"
