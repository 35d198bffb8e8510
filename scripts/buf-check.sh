#!/usr/bin/env bash
# Proto checks: `buf lint` on proto/ (rules in buf.yaml), then `buf breaking` against the
# previous commit (HEAD~1). buf comes from npm, pinned in tools/buf/package-lock.json, and
# is installed there with `npm ci` when missing or not the pinned version.
#
# Usage (from anywhere inside the repository): scripts/buf-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

tools="$root/tools/buf"
buf="$tools/node_modules/.bin/buf"
pinned=$(node -p "require('$tools/package.json').devDependencies['@bufbuild/buf']")
if [ ! -x "$buf" ] || [ "$("$buf" --version 2>/dev/null)" != "$pinned" ]; then
  echo "buf-check: installing buf $pinned with npm ci (tools/buf)"
  (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "buf-check: buf $("$buf" --version)"

echo "buf-check: buf lint"
"$buf" lint
echo "buf-check: lint passed"

# buf breaking needs the previous commit, with the protos in it.
if [ ! -e "$root/.git" ]; then
  echo "buf-check: SKIPPED buf breaking: $root is not a git checkout"
  exit 0
fi
if ! previous=$(git rev-parse --verify --quiet 'HEAD~1^{commit}'); then
  if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
    echo "buf-check: SKIPPED buf breaking: HEAD~1 is not in this shallow clone (fetch with --depth=2 or more)"
  else
    echo "buf-check: SKIPPED buf breaking: HEAD has no parent commit"
  fi
  exit 0
fi
if ! git cat-file -e "$previous:proto" 2>/dev/null; then
  echo "buf-check: SKIPPED buf breaking: HEAD~1 ($previous) has no proto/ directory"
  exit 0
fi

# With a buf.yaml in HEAD~1, buf reads the module layout (proto/) from it. Commits from
# before buf.yaml existed are read with proto/ as the module root, so that file paths
# (tenantd/v1/...) line up with the current module's.
if git cat-file -e "$previous:buf.yaml" 2>/dev/null; then
  against='.git#ref=HEAD~1'
else
  against='.git#ref=HEAD~1,subdir=proto'
fi
echo "buf-check: buf breaking --against '$against' (HEAD~1 is $previous)"
"$buf" breaking --against "$against"
echo "buf-check: no breaking changes"
