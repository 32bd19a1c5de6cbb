#!/usr/bin/env bash
# Builds the worker and serves it with wrangler dev on http://localhost:8787.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/toolchain.sh
echo "dev: admin token is in .dev.vars"
exec npx wrangler dev --port "${PORT:-8787}" "$@"
