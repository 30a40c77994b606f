#!/usr/bin/env bash
# Installs what the browser tests need, once per machine: Debian's headless
# Chromium (apt-get) and playwright-core (npm ci, from package-lock.json).
# tests/run.sh calls it; it is safe to run again.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
say() { echo "browser setup: $*" >&2; }

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { say "Chromium is missing and installing it needs root: apt-get install chromium"; exit 1; }
    sudo="sudo"
  fi
  say "installing Debian's chromium (apt-get) ..."
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi
"$chromium" --version 2>/dev/null >&2

# The printed cargos are read back as a reader would: pdftotext and pdftoppm
# (poppler-utils), and the QR code on the rendered page with zbarimg.
if ! command -v pdftotext >/dev/null || ! command -v zbarimg >/dev/null; then
  say "installing poppler-utils and zbar-tools (apt-get) ..."
  ${sudo:-} apt-get update -qq
  DEBIAN_FRONTEND=noninteractive ${sudo:-} apt-get install -y -qq poppler-utils zbar-tools >/dev/null
fi

command -v node >/dev/null || { say "Node.js is missing (node 20 or newer)"; exit 1; }
# npm ci again only when the lock file changed since the last install.
stamp="$here/node_modules/.lock-sha256"
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  say "installing playwright-core (npm ci) ..."
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$want" > "$stamp"
fi
