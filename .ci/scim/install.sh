#!/usr/bin/env bash
# Installs the SCIM conformance clients into a virtualenv ($1, default target/scim-venv) and
# prints its bin directory. Needs python3 (>= 3.11) and PyPI.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-$here/../../target/scim-venv}
if [ ! -x "$venv/bin/scim-sanity" ] || [ ! -x "$venv/bin/scim2" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
fi
cd "$venv/bin" && pwd
