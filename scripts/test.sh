#!/usr/bin/env bash
# The whole test suite: set-up (packages, npm ci, build, libvirtd), type check, jest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run -s typecheck
npm test -- "$@"
