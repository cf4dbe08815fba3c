#!/usr/bin/env bash
# Installs the OpenID Connect relying party (Authlib, requests) into a virtualenv ($1, default target/login-venv) and prints its bin directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../pyvenv.sh" "$here/requirements.txt" "${1:-$here/../../target/login-venv}"
