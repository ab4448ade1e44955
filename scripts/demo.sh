#!/usr/bin/env bash
# The demo: the main job on embedded defaults (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node examples/demo/demo.mjs "$@"
