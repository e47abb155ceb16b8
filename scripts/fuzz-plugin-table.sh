#!/usr/bin/env bash
# Longer libFuzzer run of the plugin shim's table parser (bench/fuzz-table.ts).
#   scripts/fuzz-plugin-table.sh [SECONDS]     default 600
set -euo pipefail
cd "$(dirname "$0")/.."
flock /tmp/virtnbd-build.lock npm run -s build:ts
exec node dist/bench/fuzz-table.js --seconds "${1:-600}"
