#!/usr/bin/env bash
# hive's swarm benchmarks (docs/PERFORMANCE.md), on loopback, with a 1 GiB
# random file in page cache. Every comparison is made in the same run, the
# commands interleaved round by round (A B C D A B C D ...):
#  (a) 1 seeder -> 1 leecher: hive (peerctl fetch), nginx + curl -o file,
#      aria2c from one HTTP source, the raw tonic stream -> file + BLAKE3;
#  (b) 3 seeders -> 1 leecher: hive, curl, aria2c from 3 HTTP sources
#      (-x3 -s3 -k1M against three nginx listeners), the raw tonic baseline
#      over 3 streams from 3 servers (and one request per chunk, as hive asks);
#      and hive over TLS: a second swarm (tracker, 3 seeders, the leecher) with
#      certificates from a swarm CA (`peerctl certs`), every port TLS 1.3 with
#      mutual TLS, fetched in the same rounds (TLS=0 leaves it out);
#  (c) single-chunk latency: `peerctl fetch NAME --chunk 2` with warm daemons,
#      a file name the leecher does not hold yet each time, against
#      `peerctl status` (process start + one call: the floor);
#  (d) registering: hashing the 1 GiB file as a peer does to share it;
#  (e) memory: peak RSS of a peer serving and a peer fetching a 4 GiB file.
# Each hive fetch starts from a fresh leecher (new daemon, empty directory).
#
#   scripts/bench-swarm.sh                      # RUNS=5 rounds
#   RUNS=7 scripts/bench-swarm.sh
#   BIG_MIB=0 scripts/bench-swarm.sh            # skip the 4 GiB memory check
#   PROFILE=1 scripts/bench-swarm.sh            # also perf-record one 3->1 fetch, plaintext and TLS
#   TLS=0 scripts/bench-swarm.sh                # no TLS swarm
#
# Installs nginx and aria2 with apt-get if they are missing. Scratch files
# (about 7 GiB with the memory check) live in $BENCH_DIR (default
# target/bench-swarm); the source files are kept for the next run, the rest
# is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
SIZE_MIB=${SIZE_MIB:-1024}
BIG_MIB=${BIG_MIB:-4096}
CHUNK_RUNS=${CHUNK_RUNS:-30}
TLS=${TLS:-1}
BENCH_DIR=${BENCH_DIR:-$PWD/target/bench-swarm}

install_missing() {
  local pkgs=()
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || pkgs+=(nginx)
  command -v aria2c >/dev/null || pkgs+=(aria2)
  command -v curl >/dev/null || pkgs+=(curl)
  ((${#pkgs[@]})) || return 0
  echo "==> installing ${pkgs[*]} (apt-get)"
  local sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}
install_missing
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

echo "==> building release binaries (tracker, peer, peerctl, benchmarks)"
cargo build --release --quiet -p hive-tracker -p hive-peer -p hive-bench
BIN=$PWD/target/release
mkdir -p "$BENCH_DIR"
WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
chmod 755 "$BENCH_DIR" "$WORK"
source scripts/lib.sh
trap 'hive_cleanup; rm -rf "$WORK"' EXIT
# Kept after the run, for a second look.
RESULTS=$BENCH_DIR/last-results.tsv
: >"$RESULTS"

# stop_pid PID: stops one daemon this script started (SIGTERM: a peer leaves
# the tracker on its way out), and forgets it.
stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local kept=() pid
  for pid in "${HIVE_PIDS[@]}"; do [[ $pid == "$1" ]] || kept+=("$pid"); done
  HIVE_PIDS=("${kept[@]}")
}

# record NAME ROUND SECONDS BYTES
record() { printf '%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }

# timed CMD...: runs CMD, sets ELAPSED (seconds, whole process, wall clock).
timed() {
  local t0=$EPOCHREALTIME
  "$@"
  ELAPSED=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.6f", b - a }')
}

# json_field NAME: a numeric or string field of the JSON line on stdin.
json_field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p" | tail -n1; }

# digest_of FILE: its BLAKE3 digest (as b3sum prints it).
digest_of() { "$BIN/bench-tool" hash --runs 1 --hive-only --json "$1" | json_field digest; }

# source_file PATH MIB: a random file of MIB MiB, kept between runs.
source_file() {
  local path=$1 mib=$2
  if [[ ! -f $path || $(stat -c %s "$path") != $((mib << 20)) ]]; then
    echo "    writing $mib MiB of random data to $path"
    head -c $((mib << 20)) /dev/urandom >"$path.tmp"
    mv "$path.tmp" "$path"
  fi
  chmod 644 "$path"
  cat "$path" >/dev/null # into page cache
}

echo "==> $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, load average $(cut -d' ' -f1-3 /proc/loadavg), CPU pressure $(sed -n 's/^some avg10=\([0-9.]*\) avg60=\([0-9.]*\).*/\2% (60 s)/p' /proc/pressure/cpu 2>/dev/null || echo ?), hive $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "    $("$NGINX" -v 2>&1), $(aria2c --version | sed -n 1p), $(curl --version | sed -n 1p | cut -d' ' -f1-2)"

SRC=$BENCH_DIR/src
mkdir -p "$SRC"
chmod 755 "$SRC"
FILE=big.bin
source_file "$SRC/$FILE" "$SIZE_MIB"
SIZE=$(stat -c %s "$SRC/$FILE")
DIGEST=$(digest_of "$SRC/$FILE")
echo "    $FILE: $SIZE bytes, blake3 $DIGEST"

tracker_unlimited

echo "==> a tracker, 3 seeders, nginx on 3 ports, 3 raw tonic servers"
start_tracker tracker "${unlimited[@]}"
export HIVE_TRACKER="http://$TRACKER"
SEEDERS=()
for i in 1 2 3; do
  mkdir -p "$WORK/seed$i"
  ln "$SRC/$FILE" "$WORK/seed$i/$FILE" 2>/dev/null || cp "$SRC/$FILE" "$WORK/seed$i/$FILE"
  if [[ $i == 1 ]]; then
    # Small files for the single-chunk latency: one name per fetch.
    head -c 69630 /dev/urandom >"$WORK/seed1/23"
    for ((n = 1; n <= CHUNK_RUNS + 1; n++)); do head -c 69630 /dev/urandom >"$WORK/seed1/23.$n"; done
  fi
  start_peer "seed$i" "$WORK/seed$i"
  SEEDERS+=("$PEER_LISTEN")
  [[ $i != 1 ]] || SEED1_PID=${HIVE_PIDS[-1]}
done

PLAIN_TRACKER=$TRACKER
if [[ $TLS == 1 ]]; then
  echo "==> the same swarm over TLS: a swarm CA, a TLS tracker and 3 TLS seeders"
  "$BIN/peerctl" certs init-ca "$WORK/ca" >/dev/null
  for m in tracker seed1 seed2 seed3 leech; do "$BIN/peerctl" certs new $m --ca "$WORK/ca" >/dev/null; done
  tls() { echo --tls-cert "$WORK/ca/$1/cert.pem" --tls-key "$WORK/ca/$1/key.pem" --tls-ca "$WORK/ca/$1/ca.pem"; }
  # shellcheck disable=SC2046 # the flags are words
  start_tracker tls-tracker "${unlimited[@]}" $(tls tracker)
  TLS_TRACKER=$TRACKER
  for i in 1 2 3; do
    mkdir -p "$WORK/tseed$i"
    ln "$SRC/$FILE" "$WORK/tseed$i/$FILE" 2>/dev/null || cp "$SRC/$FILE" "$WORK/tseed$i/$FILE"
    # shellcheck disable=SC2046
    TRACKER_SCHEME=https start_peer "tseed$i" "$WORK/tseed$i" $(tls seed$i)
    [[ $i != 1 ]] || TSEED1_PID=${HIVE_PIDS[-1]}
  done
  read -ra TLS_LEECH <<<"$(tls leech)"
  TRACKER=$PLAIN_TRACKER
fi

mapfile -t PORTS < <("$BIN/bench-tool" free-ports 3)
mkdir -p "$WORK/nginx"
{
  [[ $(id -u) == 0 ]] && echo "user root;"
  cat <<EOF
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
EOF
  for p in "${PORTS[@]}"; do echo "  server { listen 127.0.0.1:$p; root $SRC; }"; done
  echo "}"
} >"$WORK/nginx/nginx.conf"
"$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -e "$WORK/nginx/error.log" 2>"$WORK/nginx/stderr" &
HIVE_PIDS+=($!)
URLS=()
for p in "${PORTS[@]}"; do URLS+=("http://127.0.0.1:$p/$FILE"); done
for ((i = 0; i < 200; i++)); do
  curl -sf -o /dev/null -r 0-0 "${URLS[2]}" && break
  sleep 0.05
done
curl -sf -o /dev/null -r 0-0 "${URLS[0]}" || { echo "nginx did not start:" >&2; cat "$WORK/nginx/stderr" "$WORK/nginx/error.log" >&2; exit 1; }

RAWS=()
for i in 1 2 3; do
  "$BIN/raw-server" --listen 127.0.0.1:0 --file "$SRC/$FILE" >"$WORK/raw$i.out" 2>"$WORK/raw$i.log" &
  HIVE_PIDS+=($!)
  RAWS+=("$(wait_line "$WORK/raw$i.out" "listening on")")
done

OUT=$WORK/out
mkdir -p "$OUT"
LEECHES=0
# A leecher's own flags, and the tracker it joins: the TLS swarm's for tls_fetch.
LEECH_ARGS=()

# stamped FILE CMD...: runs CMD, writing each line of its output to FILE
# prefixed with the time it arrived; STAMP0 is when CMD started.
stamped() {
  local file=$1; shift
  STAMP0=$EPOCHREALTIME
  # A failed fetch is reported by the caller, with what it printed.
  { "$@" || true; } | while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done >"$file"
}

# hive_fetch NAME ROUND [PEERCTL FETCH ARGS...]: a fresh leecher fetches
# $FILE; records the whole peerctl process time.
hive_fetch() {
  local name=$1 round=$2; shift 2
  LEECHES=$((LEECHES + 1))
  local dir=$WORK/leech$LEECHES
  start_peer "leech$LEECHES" "$dir" "${LEECH_ARGS[@]}"
  local pid=${HIVE_PIDS[-1]}
  timed stamped "$WORK/fetch.json" "$BIN/peerctl" --control "$PEER_CONTROL" --json fetch "$FILE" "$@"
  local done_line
  done_line=$(grep '"event":"done"' "$WORK/fetch.json" || true)
  [[ -n $done_line ]] || { echo "hive fetch gave no result:" >&2; cat "$WORK/fetch.json" >&2; exit 1; }
  local received
  received=$(json_field bytes_received <<<"$done_line")
  record "$name" "$round" "$ELAPSED" "$SIZE"
  # When the last chunk was verified: the rest is the finish (fsync, verify
  # again from disk, rename, final registration).
  local verified
  verified=$(awk -v t0="$STAMP0" '/"event":"progress"/ && match($0, /"bytes_done":[0-9]+/) {
      done = substr($0, RSTART + 13, RLENGTH - 13)
      if (match($0, /"bytes_wanted":[0-9]+/) && done == substr($0, RSTART + 15, RLENGTH - 15)) { printf "%.6f", $1 - t0; exit }
    }' "$WORK/fetch.json")
  [[ -z $verified ]] || record "$name (until every chunk verified)" "$round" "$verified" "$SIZE"
  record "$name (daemon elapsed_us)" "$round" "$(awk -v us="$(json_field elapsed_us <<<"$done_line")" 'BEGIN { printf "%.6f", us / 1e6 }')" "$SIZE"
  if ((round == 1)); then
    local got
    got=$(digest_of "$dir/$FILE")
    [[ $got == "$DIGEST" ]] || { echo "hive fetch: digest $got, want $DIGEST" >&2; exit 1; }
  fi
  printf '    %-22s %7.3f s  (%s bytes received)\n' "$name" "$ELAPSED" "$received"
  stop_pid "$pid"
  rm -rf "$dir"
}

# tls_fetch NAME ROUND [PEERCTL FETCH ARGS...]: hive_fetch by a TLS leecher
# from the TLS swarm.
tls_fetch() {
  TRACKER=$TLS_TRACKER TRACKER_SCHEME=https LEECH_ARGS=("${TLS_LEECH[@]}")
  hive_fetch "$@"
  TRACKER=$PLAIN_TRACKER TRACKER_SCHEME=http LEECH_ARGS=()
}

# other_fetch NAME ROUND OUTFILE CMD...: a baseline writing OUTFILE.
other_fetch() {
  local name=$1 round=$2 out=$3; shift 3
  rm -f "$out" "$out.aria2"
  timed "$@"
  record "$name" "$round" "$ELAPSED" "$SIZE"
  if ((round == 1)); then
    local got
    got=$(digest_of "$out")
    [[ $got == "$DIGEST" ]] || { echo "$name: digest $got, want $DIGEST" >&2; exit 1; }
  fi
  printf '    %-22s %7.3f s\n' "$name" "$ELAPSED"
  rm -f "$out" "$out.aria2"
}

raw() { "$BIN/raw-fetch" "$@" >"$WORK/raw.json"; }

aria2() {
  local split=$1; shift
  aria2c -q --allow-overwrite=true --auto-file-renaming=false --file-allocation=falloc \
    -x"$split" -s"$split" -k1M -d "$OUT" -o aria2.bin "$@"
}

echo "==> (a) 1 -> 1 and (b) 3 -> 1, $RUNS rounds, interleaved"
for ((r = 1; r <= RUNS; r++)); do
  echo "  round $r"
  hive_fetch "1to1/hive" "$r" --from "${SEEDERS[0]}"
  other_fetch "1to1/curl" "$r" "$OUT/curl.bin" curl -sS -o "$OUT/curl.bin" "${URLS[0]}"
  other_fetch "1to1/aria2c" "$r" "$OUT/aria2.bin" aria2 1 "${URLS[0]}"
  other_fetch "1to1/raw-tonic" "$r" "$OUT/raw.bin" \
    raw --server "${RAWS[0]}" --out "$OUT/raw.bin" --expect "$DIGEST"
  hive_fetch "3to1/hive" "$r"
  [[ $TLS != 1 ]] || tls_fetch "3to1/hive-tls" "$r"
  other_fetch "3to1/curl" "$r" "$OUT/curl.bin" curl -sS -o "$OUT/curl.bin" "${URLS[0]}"
  other_fetch "3to1/aria2c" "$r" "$OUT/aria2.bin" aria2 3 "${URLS[@]}"
  other_fetch "3to1/raw-tonic" "$r" "$OUT/raw.bin" \
    raw --server "${RAWS[0]}" --server "${RAWS[1]}" --server "${RAWS[2]}" \
    --out "$OUT/raw.bin" --expect "$DIGEST"
  other_fetch "3to1/raw-tonic-per-chunk" "$r" "$OUT/raw.bin" \
    raw --server "${RAWS[0]}" --server "${RAWS[1]}" --server "${RAWS[2]}" \
    --streams 12 --requests chunk --out "$OUT/raw.bin" --expect "$DIGEST"
done

# profile_fetch LABEL SEEDER_PID: one more 3 -> 1 fetch by a fresh leecher
# (a TLS one when LEECH_ARGS and TRACKER say so) with the leecher and one
# seeder under perf; prints each one's top symbols and its samples by kind
# (TLS record crypto, copies, BLAKE3, the kernel), so that the plaintext and
# TLS fetches can be set side by side.
profile_fetch() {
  local label=$1 seeder=$2
  echo "==> profile ($label): one more 3 -> 1 fetch under perf (cpu-clock, call graphs)"
  LEECHES=$((LEECHES + 1))
  start_peer "leech$LEECHES" "$WORK/leech$LEECHES" "${LEECH_ARGS[@]}"
  local pid=${HIVE_PIDS[-1]} perf_leecher perf_seeder
  perf record -e cpu-clock -F 2000 -g -o "$WORK/$label-leecher.perf" -p "$pid" 2>"$WORK/perf-$label-leecher.log" &
  perf_leecher=$!
  perf record -e cpu-clock -F 2000 -g -o "$WORK/$label-seeder.perf" -p "$seeder" 2>"$WORK/perf-$label-seeder.log" &
  perf_seeder=$!
  local counted=() who_pid
  for who_pid in "leecher:$pid" "seeder:$seeder"; do
    perf stat -x, -e "$PERF_COUNTS" -o "$WORK/$label-${who_pid%%:*}.stat" -p "${who_pid#*:}" 2>/dev/null &
    counted+=($!)
  done
  sleep 0.5
  timed "$BIN/peerctl" --control "$PEER_CONTROL" --json fetch "$FILE" >/dev/null
  printf '    %-22s %7.3f s (under perf)\n' "$label" "$ELAPSED"
  kill -INT "$perf_leecher" "$perf_seeder" "${counted[@]}"
  wait "$perf_leecher" "$perf_seeder" "${counted[@]}" 2>/dev/null || true
  local who
  for who in leecher seeder; do
    perf report -i "$WORK/$label-$who.perf" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
      grep -E '^ +[0-9]' | sed -E 's/[[:space:]]+(-[[:space:]]+)*$//' >"$WORK/$label-$who.top" || true
    echo "  -- $label $who: samples $(perf report -i "$WORK/$label-$who.perf" --stdio -g none 2>/dev/null | sed -n 's/^# Samples: \([0-9.]*[KM]*\).*/\1/p' | head -1), self time by kind"
    awk '{ pct = $1; sub(/%/, "", pct)
           kind = "other"
           if ($0 ~ /aes|gcm|ghash|chacha|poly1305/) kind = "TLS record crypto"
           else if ($0 ~ /memcpy|memmove/) kind = "copies (memcpy/memmove)"
           else if ($0 ~ /blake3/) kind = "BLAKE3"
           else if ($0 ~ /\[kernel/) kind = "kernel"
           total[kind] += pct }
         END { for (k in total) printf "       %5.1f%%  %s\n", total[k], k }' "$WORK/$label-$who.top" | sort -rn
    echo "     counted (perf stat; cpu-clock in ms):"
    awk -F, '/^[0-9]/ { printf "       %14s  %s\n", $1, $3 }' "$WORK/$label-$who.stat"
    echo "     top symbols:"
    cut -c1-110 "$WORK/$label-$who.top" | sed -n 1,12p
  done
  stop_pid "$pid"
  rm -rf "$WORK/leech$LEECHES"
}

# What perf stat counts beside the profile: every system call, the socket
# reads and writes by kind, context switches and CPU time.
PERF_COUNTS=raw_syscalls:sys_enter,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_pwrite64,context-switches,cpu-clock
if [[ -n ${PROFILE:-} ]] && command -v perf >/dev/null; then
  profile_fetch plain "$SEED1_PID"
  if [[ $TLS == 1 ]]; then
    TRACKER=$TLS_TRACKER TRACKER_SCHEME=https LEECH_ARGS=("${TLS_LEECH[@]}")
    profile_fetch tls "$TSEED1_PID"
    TRACKER=$PLAIN_TRACKER TRACKER_SCHEME=http LEECH_ARGS=()
  fi
fi

echo "==> (c) single-chunk latency, $CHUNK_RUNS fetches with warm daemons"
LEECHES=$((LEECHES + 1))
start_peer "leech$LEECHES" "$WORK/leech$LEECHES"
CHUNK_LEECH=${HIVE_PIDS[-1]}
ctl() { "$BIN/peerctl" --control "$PEER_CONTROL" "$@"; }
# Warm up: the leecher's connections to the tracker and to the seeder.
ctl --json fetch "23.$((CHUNK_RUNS + 1))" --chunk 2 >/dev/null
for ((n = 1; n <= CHUNK_RUNS; n++)); do
  name="23.$n"
  ((n == 1)) && name=23
  timed ctl --json fetch "$name" --chunk 2 >"$WORK/chunk.json"
  done_line=$(grep '"event":"done"' "$WORK/chunk.json" || true)
  [[ $(json_field already_present <<<"$done_line") == false ]] || { echo "chunk fetch did not fetch:" >&2; cat "$WORK/chunk.json" >&2; exit 1; }
  record "chunk/peerctl fetch NAME --chunk 2" "$n" "$ELAPSED" 0
  record "chunk/daemon elapsed_us" "$n" "$(awk -v us="$(json_field elapsed_us <<<"$done_line")" 'BEGIN { printf "%.6f", us / 1e6 }')" 0
  timed ctl --json status >/dev/null
  record "chunk/peerctl status (floor)" "$n" "$ELAPSED" 0
  timed /bin/true
  record "chunk/true (process start)" "$n" "$ELAPSED" 0
done
stop_pid "$CHUNK_LEECH"

echo "==> (d) registering: hashing the $SIZE_MIB MiB file, $RUNS runs"
"$BIN/bench-tool" hash --runs "$RUNS" "$SRC/$FILE" | tee "$WORK/hash.md"

MEM_REPORT=""
if ((BIG_MIB > 0)); then
  echo "==> (e) memory: a peer serving and a peer fetching a $BIG_MIB MiB file"
  source_file "$SRC/huge.bin" "$BIG_MIB"
  mkdir -p "$WORK/mseed"
  ln "$SRC/huge.bin" "$WORK/mseed/huge.bin" 2>/dev/null || cp "$SRC/huge.bin" "$WORK/mseed/huge.bin"
  start_peer mseed "$WORK/mseed"
  MSEED=${HIVE_PIDS[-1]}
  MSEED_LISTEN=$PEER_LISTEN
  start_peer mleech "$WORK/mleech"
  MLEECH=${HIVE_PIDS[-1]}
  timed "$BIN/peerctl" --control "$PEER_CONTROL" --json fetch huge.bin --from "$MSEED_LISTEN" >"$WORK/huge.json"
  grep -q '"event":"done"' "$WORK/huge.json" || { echo "4 GiB fetch failed:" >&2; cat "$WORK/huge.json" >&2; exit 1; }
  mem() { awk -v f="$2" '$1 == f":" { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
  MEM_REPORT=$(
    printf '| daemon | peak RSS (VmHWM) | RSS after | target |\n|---|---|---|---|\n'
    for who in "serving:$MSEED" "fetching:$MLEECH"; do
      p=${who#*:}
      peak=$(mem "$p" VmHWM)
      verdict=met
      ((peak < 100)) || verdict=MISSED
      printf '| peer %s %s MiB | %s MiB | %s MiB | < 100 MiB: %s |\n' "${who%%:*}" "$BIG_MIB" "$peak" "$(mem "$p" VmRSS)" "$verdict"
    done
    printf '\n(the fetch took %.1f s)\n' "$ELAPSED"
  )
  echo "$MEM_REPORT"
  stop_pid "$MLEECH"
  stop_pid "$MSEED"
  rm -rf "$WORK/mleech" "$WORK/mseed"
fi

echo
echo "==> results: $RUNS rounds, medians [min–max], ratios within each round"
echo
"$BIN/bench-tool" summarize "$RESULTS" \
  --ratio "1to1/hive:1to1/curl" \
  --ratio "1to1/hive:1to1/aria2c" \
  --ratio "1to1/hive:1to1/raw-tonic" \
  --ratio "3to1/hive:3to1/aria2c>=2" \
  --ratio "3to1/hive:3to1/curl>=1" \
  --ratio "3to1/hive:3to1/raw-tonic>=0.8" \
  --ratio "3to1/raw-tonic:3to1/curl" \
  --ratio "3to1/raw-tonic-per-chunk:3to1/raw-tonic" \
  --ratio "3to1/hive:1to1/hive" \
  $([[ $TLS != 1 ]] || echo --ratio "3to1/hive-tls:3to1/hive>=0.8") | tee "$WORK/summary.md"
median_ms=$(awk -F'\t' '$1 == "chunk/peerctl fetch NAME --chunk 2" { print $3 }' "$RESULTS" | sort -g |
  awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f", m * 1000 }')
echo
echo "single-chunk fetch, median $median_ms ms end to end (target < 5 ms: $(awk -v m="$median_ms" 'BEGIN { print (m < 5) ? "met" : "MISSED" }'))"
echo "(raw timings kept in $RESULTS)"
