#!/usr/bin/env bash
# Runs every test and prints the figures they report: each test plan case
# prints one or more `FIGURE <ID>: ...` lines (docs/RELIABILITY.md quotes
# them). HIVE_LONG_TESTS=1 adds the long variants (e.g. 20-peer churn).
#
#   scripts/figures.sh              # all tests, then the figures, sorted by ID
#   scripts/figures.sh --test crash # any cargo test arguments
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(mktemp "${TMPDIR:-/tmp}/hive-figures.XXXXXX")
trap 'rm -f "$out"' EXIT
# One test at a time, so the timings are not skewed by other tests.
if ! cargo test --workspace "$@" -- --nocapture --test-threads=1 >"$out" 2>&1; then
  grep -E "^(test .* FAILED|failures:|---- )" "$out" >&2 || true
  echo "some tests failed; the figures below may be incomplete" >&2
fi
# With --nocapture a test's first line shares a line with libtest's
# "test name ... ", so the figures are cut out wherever they start.
grep -oh "FIGURE .*" "$out" | sort -t: -k1,1 -s
echo "$(grep -o 'FIGURE ' "$out" | wc -l) figures; $(grep -E '^test result' "$out" | awk '{p+=$4; f+=$6; i+=$8} END {print p " passed, " f " failed, " i " ignored"}')"
