#!/usr/bin/env bash
# Creates benches/peers/.venv with the peer engines that lakehouse-bench compares against.
# Usage: bash benches/peers/setup.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv "$here/.venv"
"$here/.venv/bin/pip" install --quiet --upgrade pip
"$here/.venv/bin/pip" install --quiet -r "$here/requirements.txt"
echo "peers ready: $here/.venv"
