#!/usr/bin/env bash
# The main job on a throw-away demo VM: back it up (full + inc), verify, mount a point, boot from
# the backup, restore; removes the VM and its files at the end (src/devtools/demo.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/src/devtools/demo.js
