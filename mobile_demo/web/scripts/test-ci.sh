#!/usr/bin/env bash
# The web demo's test command for CI: installs what the tests need when it is missing (Debian's
# chromium; node_modules via `npm ci`), then runs `npm test` (unit + Pillow parity + end-to-end).
# Fails loudly, never skips: a missing tool that cannot be installed is an error.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "mobile_demo/web: $*" >&2; exit 1; }

command -v node >/dev/null || die "node is missing (Node >= 20): apt-get install nodejs npm"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || die "Node >= 20 is needed, found $(node --version)"
command -v npm >/dev/null || die "npm is missing: apt-get install npm"

chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "mobile_demo/web: installing Debian's chromium" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
      || die "apt-get install chromium failed"
  fi
  [ -x "$chromium" ] || die "$chromium is missing: apt-get install chromium (or set CHROMIUM_PATH)"
fi

# npm ci when node_modules is missing or older than the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund || die "npm ci failed"
fi

npm test
