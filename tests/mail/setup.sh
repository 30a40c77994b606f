#!/usr/bin/env bash
# Installs the SMTP server the notification tests mail through, once per
# machine: Python's aiosmtpd (PyPI, pinned) in a virtual environment outside
# the clone. Prints the environment's python, which tests/run.sh exports as
# ECOINTEGRA_SMTPD_PYTHON.
set -euo pipefail
cache="${ECOINTEGRA_CACHE:-$HOME/.cache/ecointegra}"
venv="$cache/tools/aiosmtpd-1.4.6"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
  echo "mail setup: installing aiosmtpd 1.4.6 (PyPI) into $venv ..." >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check aiosmtpd==1.4.6 >&2
fi
echo "$venv/bin/python"
