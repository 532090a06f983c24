#!/usr/bin/env bash
# An interleaved A/B of two builds of hive on loopback: did a change make
# hive slower? A is another revision (default: the merge base with the
# previous commit, HEAD~1), B is the working tree. Round by round, A then B
# (then B then A, so neither always goes first):
#  (1) swarm: a fresh leecher fetches a random file (SIZE_MIB, 1 GiB) from
#      3 seeders, written to disk and verified; each build has its own
#      tracker and seeders, both swarms up for the whole run;
#  (2) tracker: a Locate / RegisterChunk / Heartbeat mix from 64 callers
#      against each build's tracker (durable, as it runs by default), each
#      beside the raw tonic ping (3 rounds of DURATION, ping then mix), so
#      each build's mix : ping ratio is measured under the same load.
# Prints every round, then medians and the B / A ratio of the medians.
#
#   scripts/bench-ab.sh                    # A = HEAD~1, B = the working tree
#   scripts/bench-ab.sh 132b5a8            # A = that revision
#   A_BIN=/path/to/release scripts/bench-ab.sh   # A's binaries already built
#   ROUNDS=7 SIZE_MIB=256 scripts/bench-ab.sh
#
# A's release binaries are built in a git worktree under target/ab (its own
# target directory: a cold release build, a few minutes on two cores).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
SIZE_MIB=${SIZE_MIB:-1024}
DURATION=${DURATION:-2s}
BASE=${1:-HEAD~1}
AB_DIR=$PWD/target/ab

echo "==> building B (the working tree): release tracker, peer, peerctl, benchmarks"
cargo build --release --quiet -p hive-tracker -p hive-peer -p hive-bench
B_BIN=$PWD/target/release
if [[ -z ${A_BIN:-} ]]; then
  rev=$(git rev-parse --short "$BASE")
  tree=$AB_DIR/tree-$rev
  if [[ ! -d $tree ]]; then
    git worktree add --quiet --detach "$tree" "$rev"
  fi
  echo "==> building A ($rev) in $tree"
  (cd "$tree" && CARGO_TARGET_DIR=$AB_DIR/target-$rev cargo build --release --quiet -p hive-tracker -p hive-peer)
  A_BIN=$AB_DIR/target-$rev/release
fi

mkdir -p "$AB_DIR"
WORK=$(mktemp -d "$AB_DIR/run.XXXXXX")
BIN=$B_BIN # lib.sh's helpers take BIN; set per build below
source scripts/lib.sh
trap 'hive_cleanup; rm -rf "$WORK"' EXIT

echo "==> $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); A $A_BIN, B $B_BIN (hive $(git rev-parse --short HEAD) + working tree)"

SRC=$AB_DIR/src.bin
if [[ ! -f $SRC || $(stat -c %s "$SRC") != $((SIZE_MIB << 20)) ]]; then
  head -c $((SIZE_MIB << 20)) /dev/urandom >"$SRC"
fi
cat "$SRC" >/dev/null

# swarm BUILD: a tracker and 3 seeders of BUILD's binaries; sets TRACKER_<BUILD>.
swarm() {
  local build=$1
  BIN=$([[ $build == A ]] && echo "$A_BIN" || echo "$B_BIN")
  tracker_unlimited
  start_tracker "tracker$build" "${unlimited[@]}"
  printf -v "TRACKER_$build" '%s' "$TRACKER"
  local i
  for i in 1 2 3; do
    mkdir -p "$WORK/seed$build$i"
    ln "$SRC" "$WORK/seed$build$i/big.bin" 2>/dev/null || cp "$SRC" "$WORK/seed$build$i/big.bin"
    start_peer "seed$build$i" "$WORK/seed$build$i"
  done
}
swarm A
swarm B

# timed CMD...: runs CMD, sets ELAPSED (seconds, wall clock).
timed() {
  local t0=$EPOCHREALTIME
  "$@"
  ELAPSED=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.6f", b - a }')
}

LEECHES=0
# fetch BUILD ROUND: a fresh leecher of BUILD fetches big.bin; prints seconds.
fetch() {
  local build=$1 round=$2
  BIN=$([[ $build == A ]] && echo "$A_BIN" || echo "$B_BIN")
  local var=TRACKER_$build
  TRACKER=${!var}
  LEECHES=$((LEECHES + 1))
  start_peer "leech$LEECHES" "$WORK/leech$LEECHES"
  local pid=${HIVE_PIDS[-1]}
  timed "$BIN/peerctl" --control "$PEER_CONTROL" --json fetch big.bin >"$WORK/fetch.json"
  grep -q '"event":"done"' "$WORK/fetch.json" || { echo "fetch $build failed:" >&2; cat "$WORK/fetch.json" >&2; exit 1; }
  cmp -s "$SRC" "$WORK/leech$LEECHES/big.bin" || { echo "fetch $build: wrong bytes" >&2; exit 1; }
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$WORK/leech$LEECHES"
  printf 'swarm\t%s\t%s\t%s\n' "$build" "$round" "$ELAPSED" | tee -a "$WORK/results.tsv"
}

echo "==> (1) swarm: 3 -> 1, $SIZE_MIB MiB, $ROUNDS rounds (seconds per fetch)"
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then fetch A "$r"; fetch B "$r"; else fetch B "$r"; fetch A "$r"; fi
done

echo "==> (2) tracker: mix : ping, 64 callers, $ROUNDS runs a build, each 3 rounds of $DURATION"
"$B_BIN/raw-server" --listen 127.0.0.1:0 >"$WORK/ping.out" 2>"$WORK/ping.log" &
PING_PID=$!
HIVE_PIDS+=("$PING_PID")
PING=$(wait_line "$WORK/ping.out" "listening on")
# mix BUILD ROUND: one round of tracker-load against a new tracker of BUILD.
mix() {
  local build=$1 round=$2
  BIN=$([[ $build == A ]] && echo "$A_BIN" || echo "$B_BIN")
  tracker_unlimited
  "$BIN/tracker" --listen 127.0.0.1:0 --data-dir "$WORK/load-$build-$round" --ttl 1h \
    --heartbeat-interval 1m "${unlimited[@]}" >"$WORK/load-$build.out" 2>"$WORK/load-$build.log" &
  local pid=$!
  HIVE_PIDS+=("$pid")
  local addr
  addr=$(wait_line "$WORK/load-$build.out" "listening on")
  "$B_BIN/tracker-load" --tracker "$addr" --ping "$PING" --callers 64 --connections 4 \
    --rounds 3 --duration "$DURATION" >"$WORK/load.txt" 2>&1
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # One row per tracker-load round: one round alone swings too much.
  local ratio n=0
  while read -r ratio; do
    printf 'tracker\t%s\t%s\t%s\n' "$build" "$round" "$ratio" | tee -a "$WORK/results.tsv"
    n=$((n + 1))
  done < <(sed -n 's/^round [0-9]*: .*, ratio \([0-9.]*\),.*/\1/p' "$WORK/load.txt")
  ((n > 0)) || { echo "tracker-load $build gave no ratio:" >&2; cat "$WORK/load.txt" >&2; exit 1; }
}
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then mix A "$r"; mix B "$r"; else mix B "$r"; mix A "$r"; fi
done

echo "==> medians (swarm: seconds, lower is better; tracker: mix : ping, higher is better)"
python3 - "$WORK/results.tsv" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
for what in ("swarm", "tracker"):
    a = [float(r[3]) for r in rows if r[0] == what and r[1] == "A"]
    b = [float(r[3]) for r in rows if r[0] == what and r[1] == "B"]
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{what:8} A {ma:.3f} [{min(a):.3f}-{max(a):.3f}]  B {mb:.3f} [{min(b):.3f}-{max(b):.3f}]  B/A {mb / ma:.3f}")
PY
