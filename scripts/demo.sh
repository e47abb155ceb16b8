#!/usr/bin/env bash
# The main job on a throw-away demo: back up a disk image, map each backup point, read a file out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/src/devtools/demo.js
