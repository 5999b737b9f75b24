#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite: unit tests, then the
# integration tests against the real runc, crun, CNI plugins and kernel (root needed),
# then a check that nothing was left on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "corral: the test suite runs as root (network namespaces, mounts, runc)" >&2
  exit 1
fi
bash scripts/install-deps.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
node --test --test-concurrency=1 --test-reporter=spec dist/test/unit/ 2>&1 | tee -a "$log" || status=1
node --test --test-concurrency=1 --test-reporter=spec dist/test/integration/ 2>&1 | tee -a "$log" || status=1
bash scripts/leak-check.sh || status=1

passed=$(awk '/^ℹ pass /{s+=$3} END{print s+0}' "$log")
failed=$(awk '/^ℹ fail /{s+=$3} END{print s+0}' "$log")
echo "tests: $passed passed, $failed failed"
exit $status
