#!/usr/bin/env bash
# Installs the deployment checkers (hadolint, check-jsonschema, kubernetes-validate) into a virtualenv ($1, default target/deploy-venv) and prints its bin directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../pyvenv.sh" "$here/requirements.txt" "${1:-$here/../../target/deploy-venv}"
