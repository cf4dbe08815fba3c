#!/usr/bin/env bash
# Installs a pinned requirements file ($1) into a virtualenv ($2) unless it already holds
# exactly those pins, and prints the virtualenv's bin directory. Needs python3 and PyPI.
# Used by scim/, openapi/ and login/install.sh.
set -euo pipefail
requirements=$1
venv=$2
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$venv/requirements.txt"; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" >&2
  cp "$requirements" "$venv/requirements.txt"
fi
cd "$venv/bin" && pwd
