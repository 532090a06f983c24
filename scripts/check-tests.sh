#!/usr/bin/env bash
# Every test file in tests/ must be a declared test target, or `cargo test`
# would skip it without a word: tests/Cargo.toml (hive-e2e) lists the
# end-to-end suites by hand, the root Cargo.toml the core's property tests.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=0
for f in tests/*.rs; do
  base=$(basename "$f")
  if ! grep -qx "path = \"$base\"" tests/Cargo.toml && ! grep -qx "path = \"tests/$base\"" Cargo.toml; then
    echo "check-tests: $f is not a test target: add a [[test]] entry for it to tests/Cargo.toml" >&2
    missing=1
  fi
done
((missing == 0)) && echo "check-tests: every file in tests/ is a test target"
exit "$missing"
