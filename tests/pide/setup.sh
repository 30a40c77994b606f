#!/usr/bin/env bash
# Installs the PIDE SGD doubles' one dependency, once per machine: Python's
# zeep SOAP client (PyPI, pinned; lxml from its wheel, never built) in a
# virtual environment outside the clone. Prints the environment's python,
# which runs tests/pide/sgd.py.
set -euo pipefail
zeep_version=4.3.3
cache="${ECOINTEGRA_CACHE:-$HOME/.cache/ecointegra}"
venv="$cache/tools/pide-$zeep_version"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import zeep, lxml' 2>/dev/null; then
  echo "pide setup: installing zeep $zeep_version (PyPI) into $venv ..." >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary lxml \
    "zeep==$zeep_version" >&2
fi
echo "$venv/bin/python"
