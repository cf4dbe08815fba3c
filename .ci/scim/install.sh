#!/usr/bin/env bash
# Installs the SCIM conformance clients (scim2-tester via scim2-cli, scim-sanity) into a virtualenv ($1, default target/scim-venv) and prints its bin directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../pyvenv.sh" "$here/requirements.txt" "${1:-$here/../../target/scim-venv}"
