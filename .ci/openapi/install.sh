#!/usr/bin/env bash
# Installs the OpenAPI tools (openapi-spec-validator, schemathesis) into a virtualenv ($1, default target/openapi-venv) and prints its bin directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../pyvenv.sh" "$here/requirements.txt" "${1:-$here/../../target/openapi-venv}"
