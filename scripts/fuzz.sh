#!/usr/bin/env bash
# The longer run of hive's property tests (tests/properties.rs, test plan
# BI-8): the same properties `cargo test` runs, with many more cases, again
# and again with fresh random seeds until the time is up. Stops at the first
# failure and prints proptest's shrunk minimal input.
#
#   scripts/fuzz.sh                 # 10 minutes, 20,000 cases per property per round
#   scripts/fuzz.sh 3600 100000     # an hour, 100,000 cases per property per round
#
# Prints the properties run, rounds, total cases, time and failures; exits 1
# if any property failed. Stable Rust only (proptest; cargo-fuzz would need
# nightly sanitizers).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-600}
cases=${2:-20000}

echo "==> building the property tests (release)"
exe=$(cargo test --release --test properties --no-run 2>&1 |
  sed -n 's/.*Executable tests\/properties.rs (\(.*\))/\1/p' | tail -n1)
[[ -x $exe ]] || { echo "cannot find the properties test binary" >&2; exit 2; }

# Every property but the ignored ones (known limits, reported by cargo test).
list() { "$exe" --list "$@" 2>/dev/null | sed -n 's/: test$//p' | sort; }
mapfile -t props < <(comm -23 <(list) <(list --ignored) | grep -v '^wire_extremes$')
echo "==> ${#props[@]} properties, $cases cases each per round, for ${duration}s"

log=$(mktemp "${TMPDIR:-/tmp}/hive-fuzz.XXXXXX")
trap 'rm -f "$log"' EXIT
start=$SECONDS
rounds=0
failures=0
while ((SECONDS - start < duration)); do
  if ! PROPTEST_CASES=$cases HIVE_PROPTEST_HANG_SECS=120 \
    "$exe" --test-threads "$(nproc)" --exact "${props[@]}" >"$log" 2>&1 ||
    ! grep -q '^test result: ok' "$log"; then
    failures=$((failures + 1))
    grep -E 'FAILED|panicked|minimal failing input|HANG' -A12 "$log" | head -n 80 || tail -n 40 "$log"
    break
  fi
  rounds=$((rounds + 1))
  printf '    round %d: ok (%ds)\n' "$rounds" $((SECONDS - start))
done

elapsed=$((SECONDS - start))
total=$((rounds * cases * ${#props[@]}))
echo "fuzz: properties=${#props[@]} rounds=$rounds total_cases=$total time=${elapsed}s failures=$failures"
((failures == 0))
