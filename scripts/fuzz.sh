#!/usr/bin/env bash
# The longer fuzz run (fuzz/README.md): every target in its own process (a hang kills only that
# one), SECONDS seconds each, the corpus kept in CORPUS between runs, findings in FINDINGS.
#   bash scripts/fuzz.sh [SECONDS=300] [CORPUS=fuzz-corpus] [FINDINGS=fuzz-findings]
# Needs the build (npm run build:ts). Exit status 1 when any target had a finding or died.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
corpus=${2:-fuzz-corpus}
findings=${3:-fuzz-findings}
rc=0
for t in $(node -e 'import("./dist/fuzz/targets.js").then((m) => console.log(m.TARGETS.map((t) => t.name).join(" ")))'); do
  node dist/fuzz/run.js --target "$t" --seconds "$seconds" --corpus "$corpus" --findings "$findings" --seed "$RANDOM" || rc=1
done
echo "corpus: $(find "$corpus" -type f | wc -l) files in $corpus; findings: $(find "$findings" -type f 2>/dev/null | wc -l) in $findings"
exit $rc
