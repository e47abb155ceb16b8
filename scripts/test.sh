#!/usr/bin/env bash
# The whole test suite: set-up (packages, npm ci, build, libvirtd), type check, jest.
# Ends with a plain "N passed, N failed" line; exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run -s typecheck
results=$(mktemp)
trap 'rm -f "$results"' EXIT
rc=0
npm test -- --json --outputFile="$results" "$@" || rc=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  if (r.numTotalTests === 0) { console.log("jest: no tests ran"); process.exit(1); }
  console.log(`jest: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests} skipped`);
' "$results" || rc=1
exit $rc
