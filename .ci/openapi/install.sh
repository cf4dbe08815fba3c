#!/usr/bin/env bash
# Installs the OpenAPI tools (openapi-spec-validator, schemathesis) into a virtualenv ($1,
# default target/openapi-venv) and prints its bin directory. Needs python3 (>= 3.11, for schemathesis) and PyPI.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-$here/../../target/openapi-venv}
if [ ! -x "$venv/bin/schemathesis" ] || [ ! -x "$venv/bin/openapi-spec-validator" ] \
    || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi
cd "$venv/bin" && pwd
