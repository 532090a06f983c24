#!/usr/bin/env bash
# How long a tracker takes from start to `listening on` on an existing
# catalog, cold (the page cache dropped: as after a reboot) and warm, and
# its RSS then (docs/RELIABILITY.md RE-9). Cold runs need root (they write
# /proc/sys/vm/drop_caches); without it only warm runs are made.
#
#   HIVE_TEST_RESTART_MIB=256 HIVE_TEST_KEEP_CATALOG=1 \
#     cargo test -p hive-e2e --test catalog_quota re9_a_full -- --nocapture
#   cargo build --release -p hive-tracker --bin tracker
#   scripts/bench-restart.sh /tmp/.tmpXXXX/catalog [RUNS]
set -euo pipefail
dir=${1:?usage: bench-restart.sh CATALOG_DIR [RUNS]}
runs=${2:-5}
bin=${TRACKER:-target/release/tracker}
[ -x "$bin" ] || { echo "no $bin: cargo build --release -p hive-tracker --bin tracker" >&2; exit 1; }
kinds="warm"
[ "$(id -u)" = 0 ] && kinds="cold warm"

# One start: prints seconds to `listening on` and the RSS in MiB then.
start() {
  local out t0 pid t1 rss
  out=$(mktemp)
  t0=$(date +%s.%N)
  "$bin" --listen 127.0.0.1:0 --data-dir "$dir" >"$out" 2>/dev/null &
  pid=$!
  until grep -q "listening on" "$out"; do
    kill -0 "$pid" 2>/dev/null || { echo "tracker exited" >&2; exit 1; }
    sleep 0.005
  done
  t1=$(date +%s.%N)
  rss=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$pid/status")
  kill -TERM "$pid"
  wait "$pid" || true
  rm -f "$out"
  echo "$(echo "$t1 - $t0" | bc) $rss"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for kind in $kinds; do
  times=()
  rsss=()
  for _ in $(seq "$runs"); do
    if [ "$kind" = cold ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi
    read -r t rss < <(start)
    times+=("$t")
    rsss+=("$rss")
  done
  echo "$kind: median $(printf '%s\n' "${times[@]}" | median) s of ${times[*]}; RSS MiB ${rsss[*]}"
done
