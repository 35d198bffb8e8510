#!/usr/bin/env bash
# End-to-end run of the TypeScript client against a real tenantd:
#   1. npm ci (examples/typescript/node_modules, pinned by package-lock.json), skipped when
#      the lock file has not changed since the last install;
#   2. TypeScript generated from proto/ into gen/ (buf generate with the local protoc-gen-es
#      plugin, buf.gen.yaml), compiled with tsc into dist/ (which also type-checks the walkthrough);
#   3. a live tenantd on a free port against a fresh database (scripts/live-tenantd.sh);
#   4. dist/src/walkthrough.js; then the server is stopped and the database dropped.
#
# Run from the repository root after building tenantd:  examples/typescript/run.sh
# Needs Node.js 20 or newer and npm. Settings: those of scripts/live-tenantd.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
# shellcheck source=../../scripts/live-tenantd.sh
source "$root/scripts/live-tenantd.sh"

log() { echo "run.sh: $*"; }

node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || { log "needs Node.js 20 or newer (found $(node --version))" >&2; exit 2; }

# 1. Packages, reinstalled only when package-lock.json changes.
stamp="$here/node_modules/.package-lock.sha256"
wanted=$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  log "npm ci (examples/typescript)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$wanted" > "$stamp"
fi

# 2. Generate and compile.
(cd "$here" && rm -rf dist && node_modules/.bin/buf generate && node_modules/.bin/tsc -p .)
log "generated $(find "$here/gen" -name '*.ts' | wc -l) files into examples/typescript/gen and compiled them"

# 3. The server.
live_tenantd_start tsexample

# 4. The walkthrough.
node "$here/dist/src/walkthrough.js" --target "$live_addr" --token "$live_token" \
  || live_tenantd_fail "walkthrough failed (exit $?)"
