#!/usr/bin/env bash
# hive's tracker benchmarks (docs/PERFORMANCE.md), on loopback:
#  1. tracker-load: 64 concurrent callers, a Locate / RegisterChunk /
#     Heartbeat mix against a release tracker, interleaved round by round
#     with a raw tonic unary ping server; req/s, p50/p99 and their ratio.
#     Against a durable tracker as it runs by default (each change written
#     to the journal before it is answered, folded into redb every second),
#     one started with --fsync always (each answer also waits for an fsync),
#     and an --in-memory one, which shows what durability costs.
#     Twice: first with every process free to run on both cores ("shared"),
#     then with the servers on core 0 and the load generator on core 1, one
#     runtime thread each ("split"), as if the callers were on a machine of
#     their own: on shared cores the two sides preempt each other, and that
#     sets the p99.
#  2. swarm-state: 10,000 peers and 1,000 files of 1,024 chunks with 100
#     holders each in a durable tracker; its RSS, Locate latency, and how long
#     it takes to answer again after kill -9 with that state.
#  3. scale-out (shared cores): the same mix against the embedded tracker
#     (durable), one replica on one Redis and two replicas on one Redis,
#     each round ping, embedded, one, two; Redis's own accounting per mix
#     request and per call kind (INFO commandstats, INFO cpu); then the
#     swarm-state above built through one replica on an empty Redis: Redis's
#     used_memory, and a replica's restart (it holds no state) until it
#     answers Locate.
#  4. tls (shared cores): the same mix against two durable trackers, one in
#     plaintext and one with TLS 1.3 and mutual TLS (certificates from a
#     swarm CA made by `peerctl certs`; the callers dial it with a member's
#     certificate), each round ping, plaintext, tls: what TLS costs a call.
#
#   scripts/bench-tracker.sh
#   ROUNDS=7 DURATION=5s scripts/bench-tracker.sh
#   SKIP_LOAD=1 scripts/bench-tracker.sh     # only the swarm state
#   LAYOUTS=shared scripts/bench-tracker.sh  # one core layout only
#   PARTS=scale scripts/bench-tracker.sh     # only the scale-out part (PARTS: load state scale tls)
#
# Every peer here calls from 127.0.0.1, so the tracker's per-address and
# per-session rate limits (which a real swarm spreads over many addresses)
# are lifted when this tracker has them.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-3s}
CALLERS=${CALLERS:-64}
CONNECTIONS=${CONNECTIONS:-4}
RESTARTS=${RESTARTS:-5}

echo "==> building release binaries (tracker, peerctl, benchmarks)"
cargo build --release --quiet -p hive-tracker -p hive-peer -p hive-bench
BIN=$PWD/target/release
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hive-bench-tracker.XXXXXX")
source scripts/lib.sh
trap 'hive_cleanup; rm -rf "$WORK"' EXIT

tracker_unlimited

echo "==> $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), CPU pressure $(sed -n 's/^some avg10=\([0-9.]*\) avg60=\([0-9.]*\).*/\2% (60 s)/p' /proc/pressure/cpu 2>/dev/null || echo ?), hive $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "    tracker flags: ${unlimited[*]:-(none)}"

# stop_pid PID: stops one daemon this script started, and forgets it.
stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local kept=() pid
  for pid in "${HIVE_PIDS[@]}"; do [[ $pid == "$1" ]] || kept+=("$pid"); done
  HIVE_PIDS=("${kept[@]}")
}

# on_cores LAYOUT SIDE: the command prefix that places a server or the load
# generator for LAYOUT (shared: none; split: servers on core 0, the load on
# core 1, one tokio worker thread each).
on_cores() {
  case $1:$2 in
    shared:*) ;;
    split:server) echo env TOKIO_WORKER_THREADS=1 taskset -c 0 ;;
    split:load) echo env TOKIO_WORKER_THREADS=1 taskset -c 1 ;;
    *) echo "unknown core layout '$1' (LAYOUTS: shared, split)" >&2; return 1 ;;
  esac
}

# load LAYOUT LABEL [TRACKER FLAGS...]: one tracker-load run against a new
# tracker and the ping server at $PING.
load() {
  local layout=$1 label=$2; shift 2
  local server load_gen
  read -ra server <<<"$(on_cores "$layout" server)"
  read -ra load_gen <<<"$(on_cores "$layout" load)"
  "${server[@]}" "$BIN/tracker" --listen 127.0.0.1:0 --data-dir "$WORK/tracker-$layout-$label-data" \
    --ttl 1h --heartbeat-interval 1m "${unlimited[@]}" "$@" \
    >"$WORK/tracker-$layout-$label.out" 2>"$WORK/tracker-$layout-$label.log" &
  local tracker_pid=$!
  HIVE_PIDS+=("$tracker_pid")
  TRACKER=$(wait_line "$WORK/tracker-$layout-$label.out" "listening on")
  echo
  echo "==> tracker-load ($layout cores): $CALLERS callers, $ROUNDS rounds of $DURATION, $label tracker vs raw tonic ping"
  "${load_gen[@]}" "$BIN/tracker-load" --tracker "$TRACKER" --ping "$PING" --callers "$CALLERS" \
    --connections "$CONNECTIONS" --rounds "$ROUNDS" --duration "$DURATION" \
    --tracker-pid "$tracker_pid" --ping-pid "$PING_PID"
  stop_pid "$tracker_pid"
}

PARTS=${PARTS:-load state scale tls}
[[ -z ${SKIP_LOAD:-} ]] || PARTS=state
# start_ping NAME [PREFIX...]: the raw tonic ping server the mix is measured
# beside, run under PREFIX (e.g. on_cores's); sets PING and PING_PID.
start_ping() {
  local name=$1; shift
  "$@" "$BIN/raw-server" --listen 127.0.0.1:0 >"$WORK/ping-$name.out" 2>"$WORK/ping-$name.log" &
  PING_PID=$!
  HIVE_PIDS+=("$PING_PID")
  PING=$(wait_line "$WORK/ping-$name.out" "listening on")
}

part() { [[ " $PARTS " == *" $1 "* ]]; }

if part load; then
  for layout in ${LAYOUTS:-shared split}; do
    if [[ $layout == split ]] && ! taskset -c 0,1 true 2>/dev/null; then
      echo "==> split cores skipped: needs taskset and cores 0 and 1"
      continue
    fi
    prefix=$(on_cores "$layout" server) # an unknown layout stops the script here
    read -ra server <<<"$prefix"
    start_ping "$layout" "${server[@]}"
    load "$layout" durable
    load "$layout" fsync-always --fsync always
    load "$layout" in-memory --in-memory
    stop_pid "$PING_PID"
  done
fi

if part state; then
  echo
  echo "==> swarm-state: 10,000 peers, 1,000 files x 1,024 chunks, 100 holders each; $RESTARTS restarts"
  "$BIN/swarm-state" --tracker-bin "$BIN/tracker" --data-dir "$WORK/swarm-data" \
    --restarts "$RESTARTS" -- "${unlimited[@]}"
fi

# start_redis NAME: a redis-server on a free loopback port, no persistence;
# sets REDIS (redis://127.0.0.1:PORT) and REDIS_PID.
start_redis() {
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$WORK/$1"
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$WORK/$1" \
    >"$WORK/$1.log" 2>&1 &
  REDIS_PID=$!
  HIVE_PIDS+=("$REDIS_PID")
  REDIS=redis://127.0.0.1:$port
  local i
  for ((i = 0; i < 200; i++)); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "redis-server did not start; its log:" >&2
  cat "$WORK/$1.log" >&2
  return 1
}

# replica NAME: a tracker replica on $REDIS; sets TRACKER and TRACKER_PID.
replica() {
  "$BIN/tracker" --listen 127.0.0.1:0 --store "$REDIS" --ttl 1h --heartbeat-interval 1m \
    "${unlimited[@]}" >"$WORK/$1.out" 2>"$WORK/$1.log" &
  TRACKER_PID=$!
  HIVE_PIDS+=("$TRACKER_PID")
  TRACKER=$(wait_line "$WORK/$1.out" "listening on")
}

if part scale; then
  bash scripts/install-redis.sh >/dev/null
  echo
  echo "==> scale-out: $(redis-server --version | cut -d' ' -f1-3)"
  start_ping scale
  start_tracker embedded --ttl 1h --heartbeat-interval 1m "${unlimited[@]}"
  EMBEDDED=$TRACKER EMBEDDED_PID=${HIVE_PIDS[-1]}
  # Each replica set on a Redis of its own, so that each Redis's counters
  # are its set's alone (an idle one costs nothing).
  start_redis redis-one
  ONE_REDIS=$REDIS ONE_REDIS_PID=$REDIS_PID
  replica one
  ONE=$TRACKER ONE_PID=$TRACKER_PID
  start_redis redis-two
  TWO_REDIS=$REDIS TWO_REDIS_PID=$REDIS_PID
  replica two-a
  TWO_A=$TRACKER TWO_A_PID=$TRACKER_PID
  replica two-b
  TWO_B=$TRACKER TWO_B_PID=$TRACKER_PID
  echo "    embedded $EMBEDDED; one replica $ONE on $ONE_REDIS; two replicas $TWO_A, $TWO_B on $TWO_REDIS"
  echo "    server CPU per request: the tracker's, or the replicas' and their Redis's together"
  "$BIN/tracker-load" --ping "$PING" --ping-pid "$PING_PID" --callers "$CALLERS" \
    --connections "$CONNECTIONS" --rounds "$ROUNDS" --duration "$DURATION" \
    --tracker "embedded=$EMBEDDED" --tracker-pid "embedded=$EMBEDDED_PID" \
    --tracker "one-replica=$ONE" --tracker-pid "one-replica=$ONE_PID,$ONE_REDIS_PID" \
    --redis "one-replica=$ONE_REDIS" \
    --tracker "two-replicas=$TWO_A,$TWO_B" --tracker-pid "two-replicas=$TWO_A_PID,$TWO_B_PID,$TWO_REDIS_PID" \
    --redis "two-replicas=$TWO_REDIS"
  hive_cleanup

  echo
  echo "==> swarm-state through one replica on an empty Redis: 10,000 peers, 1,000 files x 1,024 chunks, 100 holders each; $RESTARTS replica restarts"
  start_redis redis-state
  "$BIN/swarm-state" --tracker-bin "$BIN/tracker" --data-dir "$WORK/swarm-redis" \
    --restarts "$RESTARTS" --redis "$REDIS" -- --store "$REDIS" "${unlimited[@]}"
  redis-cli -u "$REDIS" info memory | grep -E '^(used_memory|used_memory_rss|used_memory_dataset|mem_fragmentation_ratio):' | tr -d '\r'
  echo "keys: $(redis-cli -u "$REDIS" dbsize)"
  hive_cleanup
fi

if part tls; then
  echo
  echo "==> tls (shared cores): the mix against a plaintext and a TLS tracker, both durable"
  "$BIN/peerctl" certs init-ca "$WORK/ca" >/dev/null
  for m in tracker load; do "$BIN/peerctl" certs new $m --ca "$WORK/ca" >/dev/null; done
  start_ping tls
  start_tracker plain --ttl 1h --heartbeat-interval 1m "${unlimited[@]}"
  PLAIN=$TRACKER PLAIN_PID=${HIVE_PIDS[-1]}
  start_tracker tls --ttl 1h --heartbeat-interval 1m "${unlimited[@]}" \
    --tls-cert "$WORK/ca/tracker/cert.pem" --tls-key "$WORK/ca/tracker/key.pem" --tls-ca "$WORK/ca/tracker/ca.pem"
  TLS_ADDR=$TRACKER TLS_PID=${HIVE_PIDS[-1]}
  "$BIN/tracker-load" --ping "$PING" --ping-pid "$PING_PID" --callers "$CALLERS" \
    --connections "$CONNECTIONS" --rounds "$ROUNDS" --duration "$DURATION" \
    --tracker "plaintext=$PLAIN" --tracker-pid "plaintext=$PLAIN_PID" \
    --tracker "tls=https://$TLS_ADDR" --tracker-pid "tls=$TLS_PID" \
    --tls-cert "$WORK/ca/load/cert.pem" --tls-key "$WORK/ca/load/key.pem" --tls-ca "$WORK/ca/load/ca.pem"
  hive_cleanup
fi
