#!/usr/bin/env bash
# hive and two BitTorrent clients in an emulated network (docs/PERFORMANCE.md,
# "Swarms on emulated links"): a tracker, a seeder and N leechers, each in
# its own network namespace on one bridge, every link with its own upload
# and download cap (tbf) and a one-way delay (NFQUEUE + bench's netem-delay:
# this kernel has no netem qdisc). hive (tracker, peer daemons, peerctl
# fetch), aria2c and transmission-cli (BitTorrent, with the small tracker in
# bench/netem/bt-tracker.py) run on the same network, interleaved round by
# round. Reports each leecher's completion, the all-done time against the
# lower bound max(F/u_s, N·F/(u_s+Σu_i)) and the client-server bound
# N·F/u_s, each peer's upload in copies of the file (link byte counters),
# and writes link utilisation over time (4 samples a second) as CSV.
#
#   scripts/netem-swarm.sh                   # flash crowd: 128 MiB, 1+8, 50 Mbit/s up, 20 ms, 3 rounds
#   scripts/netem-swarm.sh flash hetero      # scenarios: flash, hetero, churn
#   SIZE_MIB=16 LEECHERS=4 ROUNDS=1 CLIENTS=hive scripts/netem-swarm.sh
#   scripts/netem-swarm.sh --cleanup         # remove what an interrupted run left
#   scripts/netem-swarm.sh --help
#
# Scenarios:
#   flash   1 seeder + LEECHERS leechers, all starting at once.
#   hetero  half the leechers upload at SLOW_MBIT; the seeder leaves once it
#           has uploaded LEAVE_COPIES copies; one more leecher joins at LATE_S.
#   churn   LEECHERS leechers at once; each that finishes leaves and a new
#           one arrives, CHURN_ARRIVALS (LEECHERS) times.
#
# Knobs (environment): SIZE_MIB (128), LEECHERS (8), UP_MBIT (50, every
# upload), SEED_UP_MBIT (UP_MBIT), DOWN_MBIT (0: no download cap), DELAY_MS
# (20, one way), QUEUE_MS (50, the most a shaped link queues), ROUNDS (3),
# CLIENTS ("hive aria2c transmission"), SLOW_MBIT (10), LEAVE_COPIES (1.05:
# counted in link bytes, which carry 4-5 % of headers: one copy of payload),
# LATE_S (10), CHURN_ARRIVALS (LEECHERS), TIMEOUT_S (300), STALL_S (20: a
# round in which the leechers receive less than 1 MiB in this long ends),
# NETEM_DIR (target/netem).
# ASSERT=1 (what scripts/netem-ci.sh sets) exits non-zero unless every
# leecher of every round finished with the source's digest.
#
# Must run as root. Everything lives in namespaces named hvn-*: a link, a
# rule or an address outside them is never touched, and every namespace and
# every process in them is removed on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-128}
LEECHERS=${LEECHERS:-8}
UP_MBIT=${UP_MBIT:-50}
SEED_UP_MBIT=${SEED_UP_MBIT:-$UP_MBIT}
DOWN_MBIT=${DOWN_MBIT:-0}
DELAY_MS=${DELAY_MS:-20}
QUEUE_MS=${QUEUE_MS:-50}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-hive aria2c transmission}
SLOW_MBIT=${SLOW_MBIT:-10}
LEAVE_COPIES=${LEAVE_COPIES:-1.05}
LATE_S=${LATE_S:-10}
CHURN_ARRIVALS=${CHURN_ARRIVALS:-$LEECHERS}
TIMEOUT_S=${TIMEOUT_S:-300}
STALL_S=${STALL_S:-20}
NETEM_DIR=${NETEM_DIR:-$PWD/target/netem}
ASSERT=${ASSERT:-}

P=hvn-             # every namespace this script makes
NET=10.203.0       # the emulated network, inside those namespaces only
TRACKER_IP=$NET.2

# netem_cleanup: ends every process in our namespaces, then removes them
# (with them go their links, the bridge, the qdiscs and the iptables rules).
netem_cleanup() {
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk -v p="$P" 'index($1, p) == 1 { print $1 }'); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  for ns in $(ip netns list 2>/dev/null | awk -v p="$P" 'index($1, p) == 1 { print $1 }'); do
    ip netns del "$ns" 2>/dev/null || true
  done
}

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
if [[ ${1:-} == --cleanup ]]; then
  netem_cleanup
  exit 0
fi
[[ $(id -u) == 0 ]] || { echo "netem-swarm.sh: must run as root (namespaces, tc, iptables)" >&2; exit 2; }
SCENARIOS=("${@:-flash}")
for s in "${SCENARIOS[@]}"; do
  [[ $s == flash || $s == hetero || $s == churn ]] || { echo "unknown scenario '$s' (flash, hetero, churn)" >&2; exit 2; }
done
for c in $CLIENTS; do
  [[ $c == hive || $c == aria2c || $c == transmission ]] || { echo "unknown client '$c' (hive, aria2c, transmission)" >&2; exit 2; }
done

install_missing() {
  local pkgs=()
  command -v ip >/dev/null || pkgs+=(iproute2)
  command -v iptables >/dev/null || pkgs+=(iptables)
  command -v python3 >/dev/null || pkgs+=(python3)
  [[ $CLIENTS == hive ]] || command -v mktorrent >/dev/null || pkgs+=(mktorrent)
  [[ " $CLIENTS " != *" aria2c "* ]] || command -v aria2c >/dev/null || pkgs+=(aria2)
  [[ " $CLIENTS " != *" transmission "* ]] || command -v transmission-cli >/dev/null || pkgs+=(transmission-cli)
  ((${#pkgs[@]})) || return 0
  echo "==> installing ${pkgs[*]} (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  }
}
install_missing

echo "==> building release binaries (tracker, peer, peerctl, netem-delay, bench-tool)"
cargo build --release --quiet -p hive-tracker -p hive-peer -p hive-bench
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
TOOLS=$PWD/bench/netem

mkdir -p "$NETEM_DIR"
# One run at a time: the namespaces' names are fixed.
exec 9>"$NETEM_DIR/.lock"
flock -n 9 || { echo "netem-swarm.sh: another run holds $NETEM_DIR/.lock" >&2; exit 1; }
netem_cleanup # what an interrupted run may have left
RUN=$NETEM_DIR/run-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RUN"
chmod 755 "$NETEM_DIR" "$RUN"
RESULTS=$RUN/results.tsv
: >"$RESULTS"
source scripts/lib.sh # wait_line
trap 'exec 2>/dev/null; netem_cleanup' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# nsx NODE CMD...: runs CMD in NODE's namespace. (A process started in the
# background is started with `ip netns exec` itself, so that $! is its pid.)
nsx() { local node=$1; shift; ip netns exec "$P$node" "$@"; }

# ---------------------------------------------------------------- network

# net_switch: the switch namespace with the bridge every node hangs on.
net_switch() {
  ip netns add "${P}sw"
  nsx sw sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  nsx sw ip link set lo up
  nsx sw ip link add br0 type bridge
  nsx sw ip link set br0 up
  # Counters of every link, 4 times a second, for the whole run.
  ip netns exec "${P}sw" python3 "$TOOLS/sample.py" 0.25 >"$RUN/samples-$SCENARIO.txt" &
  SAMPLER=$!
  disown "$SAMPLER" # netem_cleanup ends it
}

# shape NODE DEV MBIT: caps what leaves DEV in NODE's namespace at MBIT
# (tbf: a burst of 128 KiB or 2 ms, whichever is more, so GSO packets pass
# whole; at most QUEUE_MS queued, past that packets drop).
shape() {
  local node=$1 dev=$2 mbit=$3
  [[ $mbit != 0 ]] || return 0
  local burst
  burst=$(awk -v m="$mbit" 'BEGIN { b = m * 1e6 / 8 * 0.002; if (b < 131072) b = 131072; printf "%d", b }')
  nsx "$node" tc qdisc replace dev "$dev" root tbf rate "${mbit}mbit" burst "$burst" latency "${QUEUE_MS}ms"
}

# net_node NODE HOST UP_MBIT DOWN_MBIT: NODE's namespace, linked to the
# bridge, at $NET.HOST; upload shaped on its side of the link, download on
# the switch's side; every packet it receives held DELAY_MS first.
net_node() {
  local node=$1 host=$2 up=$3 down=$4
  ip netns add "$P$node"
  nsx "$node" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  nsx "$node" ip link set lo up
  ip -n "${P}sw" link add "v-$node" type veth peer name eth0 netns "$P$node"
  nsx sw ip link set "v-$node" master br0 up
  nsx "$node" ip addr add "$NET.$host/24" dev eth0
  nsx "$node" ip link set eth0 up
  shape "$node" eth0 "$up"
  shape sw "v-$node" "$down"
  if [[ $DELAY_MS != 0 ]]; then
    rm -f "$RUN/net-$node.delay" # a churn round's arrival may have had it
    ip netns exec "$P$node" "${RT[@]}" "$BIN/netem-delay" --delay-ms "$DELAY_MS" >"$RUN/net-$node.delay" 2>&1 &
    DELAYERS+=($!)
    disown $!
    wait_line "$RUN/net-$node.delay" '^ready' >/dev/null
    nsx "$node" iptables -t mangle -A PREROUTING -i eth0 -j NFQUEUE --queue-num 0
  fi
  UP_RATE[$node]=$up
  HOST[$node]=$host
}

# The delayers run as real-time tasks where the kernel allows it: they need
# little CPU but need it on time, and on two busy cores an ordinary task
# waits tens of milliseconds now and then (the release lateness printed
# after each scenario shows it). The kernel's RT throttling still leaves
# the rest of the machine 5 % of every second.
RT=()
if chrt -f 10 true 2>/dev/null; then RT=(chrt -f 10); fi

# counters: "NODE UP_BYTES DOWN_BYTES" for every link, read from the
# switch's namespace (through the sampler's /proc entry: no process start).
counters() {
  awk '{ sub(/^[ \t]+/, ""); sub(/:/, " ") } $1 ~ /^v-/ { print substr($1, 3), $2, $10 }' "/proc/$SAMPLER/net/dev"
}

# link_totals: sets SEED_UP (what the seeder has uploaded) and LEECH_DOWN
# (what all leechers have downloaded), without starting a process: the
# round's watch loop calls it 4 times a second, on cores that may be busy.
link_totals() {
  local line name f
  SEED_UP=0 LEECH_DOWN=0
  while IFS= read -r line; do
    [[ $line == *:* ]] || continue
    name=${line%%:*}
    name=${name//[[:space:]]/}
    [[ $name == v-* ]] || continue
    read -r -a f <<<"${line#*:}"
    case ${name#v-} in
      s) SEED_UP=${f[0]} ;;
      t) ;;
      *) LEECH_DOWN=$((LEECH_DOWN + f[8])) ;;
    esac
  done <"/proc/$SAMPLER/net/dev"
}

# us_now: the time in microseconds.
us_now() { local t=$EPOCHREALTIME; echo "${t/./}"; }

# ---------------------------------------------------------------- clients
# Each client has start_seed_CLIENT NODE, start_leech_CLIENT NODE (returns
# at once; writes $W/NODE.done as "EXIT_CODE EPOCH" when the leecher has the
# whole file) and data_CLIENT NODE (where the leecher's bytes are).

declare -A PIDS=()   # node -> pid of its client in this round
DELAYERS=()          # pids of the netem-delay processes
declare -A UP_RATE=() HOST=()

hive_tracker() {
  ip netns exec "${P}t" "$BIN/tracker" --listen "$TRACKER_IP:65001" --data-dir "$W/tracker-data" >"$W/tracker.out" 2>"$W/tracker.log" &
  PIDS[tracker]=$!
  wait_line "$W/tracker.out" "listening on" >/dev/null
}

hive_daemon() {
  local node=$1
  mkdir -p "$W/$node"
  # Each verified chunk and whom it came from, for bench/netem/timeline.py.
  ip netns exec "$P$node" env RUST_LOG="${RUST_LOG:-info},hive_peer::timeline=debug" "$BIN/peer" --tracker "http://$TRACKER_IP:65001" --listen "$NET.${HOST[$node]}:7000" \
    --dir "$W/$node" >"$W/$node.out" 2>"$W/$node.log" &
  PIDS[$node]=$!
}

hive_ready() {
  local node=$1 i
  for ((i = 0; i < 600; i++)); do
    nsx "$node" "$BIN/peerctl" --dir "$W/$node" health >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "hive peer $node did not register:" >&2
  tail -n 20 "$W/$node.log" >&2
  return 1
}

start_seed_hive() {
  hive_tracker
  mkdir -p "$W/$1"
  ln "$SRC" "$W/$1/$FILE"
  hive_daemon "$1"
  hive_ready "$1"
}

# The daemons start before the clock (a peer is a service that is already
# running); the fetch is what is timed.
prepare_leech_hive() { hive_daemon "$1"; }
ready_leech_hive() { hive_ready "$1"; }

start_leech_hive() {
  local node=$1
  (
    rc=0
    nsx "$node" "$BIN/peerctl" --dir "$W/$node" --json fetch --fail-fast "$FILE" >"$W/$node.fetch" 2>&1 || rc=$?
    echo "$rc $EPOCHREALTIME" >"$W/$node.done"
  ) &
}

data_hive() {
  local part
  if [[ -f $W/$1/$FILE ]]; then echo "$W/$1/$FILE"; return; fi
  for part in "$W/$1"/.hive/partial/*.part; do echo "$part"; return; done
}

bt_tracker() {
  ip netns exec "${P}t" python3 "$TOOLS/bt-tracker.py" --listen "$TRACKER_IP:6969" >"$W/bt-tracker.out" 2>"$W/bt-tracker.log" &
  PIDS[tracker]=$!
  wait_line "$W/bt-tracker.out" "listening on" >/dev/null
}

# bt_seed_ready NODE: waits until NODE has announced itself as a seed.
bt_seed_ready() {
  local ip=$NET.${HOST[$1]} i
  for ((i = 0; i < 1200; i++)); do
    grep -q " $ip .*left=0[&\" ]" "$W/bt-tracker.log" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "BitTorrent seed $1 did not announce:" >&2
  tail -n 20 "$W/$1.out" >&2
  return 1
}

# done_hook NODE: a script BitTorrent clients run when NODE's download is complete.
done_hook() {
  # shellcheck disable=SC2016 # $(date) runs in the hook, when it is called
  printf '#!/bin/sh\necho "0 $(date +%%s.%%N)" >%s\n' "$W/$1.done" >"$W/$1.hook"
  chmod +x "$W/$1.hook"
}

# aria2c without file allocation: any kind of it (even falloc) holds its
# first announce back by about a second.
aria2() {
  local node=$1; shift
  ip netns exec "$P$node" aria2c --dir="$W/$node" --enable-dht=false --enable-dht6=false --bt-enable-lpd=false \
    --enable-peer-exchange=false --seed-ratio=0.0 --listen-port=6881 --file-allocation=none \
    --summary-interval=1 --console-log-level=warn "$@" "$TORRENT" >"$W/$node.out" 2>&1 &
  PIDS[$node]=$!
}

start_seed_aria2c() {
  bt_tracker
  mkdir -p "$W/$1"
  ln "$SRC" "$W/$1/$FILE"
  aria2 "$1" --bt-seed-unverified=true
  bt_seed_ready "$1"
}
prepare_leech_aria2c() { mkdir -p "$W/$1"; done_hook "$1"; }
ready_leech_aria2c() { :; }
start_leech_aria2c() { aria2 "$1" --on-bt-download-complete="$W/$1.hook"; }
data_aria2c() { echo "$W/$1/$FILE"; }

transmission() {
  local node=$1; shift
  mkdir -p "$W/$node.cfg"
  cat >"$W/$node.cfg/settings.json" <<EOF
{"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "port-forwarding-enabled": false,
 "speed-limit-up-enabled": false, "speed-limit-down-enabled": false, "ratio-limit-enabled": false,
 "idle-seeding-limit-enabled": false, "message-level": 1}
EOF
  ip netns exec "$P$node" transmission-cli -g "$W/$node.cfg" -w "$W/$node" -p 51413 -M -U -D "$@" "$TORRENT" >"$W/$node.out" 2>&1 &
  PIDS[$node]=$!
}

start_seed_transmission() {
  bt_tracker
  mkdir -p "$W/$1"
  ln "$SRC" "$W/$1/$FILE"
  transmission "$1"
  bt_seed_ready "$1"
}
prepare_leech_transmission() { mkdir -p "$W/$1"; done_hook "$1"; }
ready_leech_transmission() { :; }
start_leech_transmission() { transmission "$1" -f "$W/$1.hook"; }
data_transmission() {
  if [[ -f $W/$1/$FILE.part ]]; then echo "$W/$1/$FILE.part"; else echo "$W/$1/$FILE"; fi
}

# seed_leaves NODE: the seeder goes: from now on it sends nothing but TCP
# resets to the other peers (its connections end at once, as when a client
# quits), still reaches the tracker to say goodbye, and gets SIGTERM.
seed_leaves() {
  local node=$1
  nsx "$node" iptables-restore --noflush <<RULES
*filter
-A OUTPUT -o eth0 ! -d $TRACKER_IP -p tcp ! --tcp-flags RST RST -j DROP
-A OUTPUT -o eth0 ! -d $TRACKER_IP ! -p tcp -j DROP
-A INPUT -i eth0 ! -s $TRACKER_IP -p tcp -j REJECT --reject-with tcp-reset
-A INPUT -i eth0 ! -s $TRACKER_IP -j DROP
COMMIT
RULES
  kill -TERM "${PIDS[$node]}" 2>/dev/null || true
}

# stop_round: ends every client process of the round, and lifts the
# seeder's departure rules.
stop_round() {
  local pid
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
  nsx s iptables -F INPUT
  nsx s iptables -F OUTPUT
}

# ---------------------------------------------------------------- a round

# piece_of CLIENT: the unit CLIENT verifies and serves (hive's chunk, the torrent's piece).
piece_of() { if [[ $1 == hive ]]; then echo $((1 << PIECE_LOG)); else echo $((1 << BT_PIECE_LOG)); fi; }

digest_of() { "$BIN/bench-tool" hash --runs 1 --hive-only --json "$1" | sed -n 's/.*"digest":"\([^"]*\)".*/\1/p'; }

# run_round CLIENT ROUND: one round of $SCENARIO with CLIENT; appends to results.tsv.
run_round() {
  local client=$1 round=$2
  W=$RUN/$SCENARIO-$client-r$round
  mkdir -p "$W"
  local -A start_at=() role=()
  local node
  for node in "${LEECH[@]}"; do start_at[$node]=0; role[$node]=leech; done
  if [[ $SCENARIO == hetero ]]; then
    start_at[$LATE]=$LATE_S
    role[$LATE]=late
  fi
  "start_seed_$client" s
  for node in "${LEECH[@]}"; do "prepare_leech_$client" "$node"; done
  for node in "${LEECH[@]}"; do "ready_leech_$client" "$node"; done
  local -A c0=() c1=()
  local n u d
  while read -r n u d; do c0[$n]="$u $d"; done < <(counters)
  local t0=$EPOCHREALTIME
  local t0_us=${t0/./}
  local -A started=()
  for node in "${LEECH[@]}"; do
    if [[ ${start_at[$node]} == 0 ]]; then "start_leech_$client" "$node"; started[$node]=1; fi
  done
  local outcome=timeout left=0 seed_up0=${c0[s]%% *} last_moved=0 last_total=0 arrivals=0
  # The watch loop below starts no process while nothing happens (times
  # in integer milliseconds since t0), so that it keeps to its 4 checks a
  # second on busy cores: a leaving seeder is cut off within about 0.25 s.
  local leave_bytes stall_ms timeout_ms
  leave_bytes=$(awk -v c="$LEAVE_COPIES" -v f="$SIZE" 'BEGIN { printf "%.0f", c * f }')
  stall_ms=$(awk -v s="$STALL_S" 'BEGIN { printf "%.0f", s * 1000 }')
  timeout_ms=$(awk -v s="$TIMEOUT_S" 'BEGIN { printf "%.0f", s * 1000 }')
  local -A start_ms=()
  for node in "${LEECH[@]}"; do start_ms[$node]=$(awk -v s="${start_at[$node]}" 'BEGIN { printf "%.0f", s * 1000 }'); done
  local -A finished=() done_at=()
  while :; do
    sleep 0.25
    local el_ms=$((($(us_now) - t0_us) / 1000))
    local all=1 failed=0
    for node in "${LEECH[@]}"; do
      if [[ -z ${finished[$node]:-} && -s $W/$node.done ]]; then
        local rc ts
        read -r rc ts <"$W/$node.done"
        finished[$node]=$rc
        if [[ $rc == 0 ]]; then
          done_at[$node]=$(awk -v a="$t0" -v b="$ts" 'BEGIN { printf "%.3f", b - a }')
        else
          echo "    $node: $client exited with $rc" >&2
          tail -n 5 "$W/$node.fetch" "$W/$node.out" 2>/dev/null >&2 || true
        fi
        if [[ $SCENARIO == churn ]] && ((arrivals < CHURN_ARRIVALS)); then
          # The finished leecher leaves, a new one arrives.
          arrivals=$((arrivals + 1))
          kill -TERM "${PIDS[$node]}" 2>/dev/null || true
          local new=l$((${#LEECH[@]} + 1))
          LEECH+=("$new")
          role[$new]=churn
          net_node "$new" $((10 + ${#LEECH[@]})) "$UP_MBIT" "$DOWN_MBIT"
          while read -r n u d; do [[ -n ${c0[$n]:-} ]] || c0[$n]="$u $d"; done < <(counters)
          "prepare_leech_$client" "$new"
          "ready_leech_$client" "$new"
          start_at[$new]=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
          start_ms[$new]=0
          "start_leech_$client" "$new"
          started[$new]=1
          all=0
        fi
      fi
      [[ -n ${finished[$node]:-} ]] || all=0
      [[ ${finished[$node]:-0} == 0 ]] || failed=1
      if [[ -z ${started[$node]:-} ]] && ((el_ms >= start_ms[$node])); then
        "start_leech_$client" "$node"
        started[$node]=1
      fi
    done
    if ((all && failed)); then outcome=failed; break; fi
    if ((all)); then outcome="done"; break; fi
    link_totals
    if [[ $SCENARIO == hetero && $left == 0 ]] && ((SEED_UP - seed_up0 >= leave_bytes)); then
      seed_leaves s
      left=1
      echo "    seeder left at $((el_ms / 1000)).$(printf '%03d' $((el_ms % 1000))) s"
    fi
    # Stalled: the leechers together received less than 1 MiB in STALL_S
    # (BitTorrent peers keep talking, about 20 KiB/s for 9 aria2c's).
    if ((LEECH_DOWN - last_total > 1 << 20)); then last_total=$LEECH_DOWN; last_moved=$el_ms; fi
    if ((el_ms - last_moved >= stall_ms)); then outcome=stalled; break; fi
    if ((el_ms >= timeout_ms)); then break; fi
  done
  local t1=$EPOCHREALTIME
  while read -r n u d; do c1[$n]="$u $d"; done < <(counters)
  stop_round
  # Who holds what, and each finished leecher's digest.
  local args=() held
  for node in "${LEECH[@]}"; do args+=("$node=$("data_$client" "$node")"); done
  held=$(python3 "$TOOLS/held.py" "$SRC" "$(piece_of "$client")" "${args[@]}")
  printf 'round\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$SCENARIO" "$client" "$round" "$t0" "$t1" "$outcome" \
    "$(awk '$1 == "nobody" { print $2 }' <<<"$held")" "$(awk '$1 == "pieces" { print $2 }' <<<"$held")" >>"$RESULTS"
  local line="    $client round $round: $outcome"
  for node in s "${LEECH[@]}"; do
    local done_s=- digest=- frac=0 r=${role[$node]:-seed}
    if [[ $node != s ]]; then
      frac=$(awk -v n="$node" '$1 == n { print $2 }' <<<"$held")
      if [[ -n ${done_at[$node]:-} ]]; then
        done_s=${done_at[$node]}
        if [[ $(digest_of "$("data_$client" "$node")") == "$DIGEST" ]]; then digest=ok; else digest=bad; fi
      fi
      line+=" $node=${done_s}"
    fi
    local u0 d0 u1 d1
    read -r u0 d0 <<<"${c0[$node]:-0 0}"
    read -r u1 d1 <<<"${c1[$node]:-0 0}"
    printf 'node\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$SCENARIO" "$client" "$round" "$node" "$r" \
      "${UP_RATE[$node]}" "${start_at[$node]:-0}" "$done_s" $((u1 - u0)) $((d1 - d0)) "$frac" "$digest" >>"$RESULTS"
  done
  if [[ -f $W/bt-tracker.log ]]; then
    # How long the BitTorrent leechers took from their start to their first
    # announce (hive's daemons are up before the clock; these start at it).
    line+=" [first announces after $(awk -v t0="$t0" -v seed="$NET.${HOST[s]}" '$2 != seed && !seen[$2]++ {
        d = $1 - t0; if (d >= 0 && (n++ == 0 || d < lo)) lo = d; if (d > hi) hi = d } END { printf "%.2f-%.2f s", lo, hi }' "$W/bt-tracker.log")]"
  fi
  echo "$line (seeder uploaded $(awk -v b=$((${c1[s]%% *} - ${c0[s]%% *})) -v f="$SIZE" 'BEGIN { printf "%.2f", b / f }') copies)"
  # hive's own account: which chunks the seeder sent twice, when leechers
  # began to serve each other (TIMELINE_S: seconds shown, 0 for none).
  if [[ $client == hive && ${TIMELINE_S:-40} != 0 ]]; then
    python3 "$TOOLS/timeline.py" "$W" "$t0" "$NET.${HOST[s]}:7000" "${TIMELINE_S:-40}" || true
  fi
  if [[ $SCENARIO == churn ]]; then
    # The leechers that arrived during the round go with it.
    local kept=() i=0
    for node in "${LEECH[@]}"; do
      i=$((i + 1))
      if ((i <= LEECHERS)); then kept+=("$node"); else ip netns pids "$P$node" | xargs -r kill -KILL; ip netns del "$P$node"; fi
    done
    LEECH=("${kept[@]}")
  fi
  rm -rf "${W:?}"/*/
}

# ---------------------------------------------------------------- the run

SRC=$NETEM_DIR/swarm-${SIZE_MIB}MiB.bin
if [[ ! -f $SRC || $(stat -c %s "$SRC") != $((SIZE_MIB << 20)) ]]; then
  echo "==> writing $SIZE_MIB MiB of random data to $SRC"
  head -c $((SIZE_MIB << 20)) /dev/urandom >"$SRC.tmp"
  mv "$SRC.tmp" "$SRC"
fi
SIZE=$(stat -c %s "$SRC")
DIGEST=$(digest_of "$SRC")
# hive's chunk: a power of two keeping the file near 1,024 chunks (its
# default). The torrent's pieces are the same size where BitTorrent allows
# (mktorrent: 32 KiB at least).
PIECE_LOG=$(awk -v s="$SIZE" 'BEGIN { l = 10; while (2 ^ (l + 1) * 1024 <= s && l < 24) l++; print l }')
BT_PIECE_LOG=$((PIECE_LOG < 15 ? 15 : PIECE_LOG))
# The torrent names its file after the source; hive shares it by that name too.
FILE=$(basename "$SRC")
TORRENT=$RUN/$FILE.torrent
[[ $CLIENTS == hive ]] || mktorrent -l "$BT_PIECE_LOG" -a "http://$TRACKER_IP:6969/announce" -o "$TORRENT" "$SRC" >/dev/null

echo "==> $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), hive $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(aria2c --version 2>/dev/null | sed -n 1p), $(transmission-cli --version 2>&1 | head -n1), tcp $(sysctl -n net.ipv4.tcp_congestion_control)"
echo "    $SIZE_MIB MiB (hive chunks $((1 << PIECE_LOG)) B, torrent pieces $((1 << BT_PIECE_LOG)) B), $LEECHERS leechers, upload ${UP_MBIT} Mbit/s (seeder ${SEED_UP_MBIT}), download cap ${DOWN_MBIT} Mbit/s (0: none), one-way delay ${DELAY_MS} ms, $ROUNDS rounds: $CLIENTS"
echo "    results in $RUN"

for SCENARIO in "${SCENARIOS[@]}"; do
  echo "==> $SCENARIO"
  # Every leecher writes a copy of the file: refuse to fill the disk.
  need=$(((LEECHERS + 2) * SIZE))
  free=$(($(df --output=avail -B1 "$NETEM_DIR" | tail -n1)))
  if ((free < need + (1 << 30))); then
    echo "netem-swarm.sh: $NETEM_DIR has $((free >> 20)) MiB free; a round needs $((need >> 20)) MiB and 1 GiB to spare" >&2
    exit 1
  fi
  net_switch
  net_node t 2 0 0
  net_node s 10 "$SEED_UP_MBIT" "$DOWN_MBIT"
  LEECH=()
  sum_up=0
  for ((i = 1; i <= LEECHERS; i++)); do
    up=$UP_MBIT
    [[ $SCENARIO != hetero ]] || ((i > LEECHERS / 2)) || up=$SLOW_MBIT
    net_node "l$i" $((10 + i)) "$up" "$DOWN_MBIT"
    LEECH+=("l$i")
    sum_up=$(awk -v a="$sum_up" -v b="$up" 'BEGIN { print a + b }')
  done
  n=$LEECHERS
  if [[ $SCENARIO == hetero ]]; then
    LATE=l$((LEECHERS + 1))
    net_node "$LATE" $((11 + LEECHERS)) "$UP_MBIT" "$DOWN_MBIT"
    LEECH+=("$LATE")
    n=$((n + 1))
    sum_up=$(awk -v a="$sum_up" -v b="$UP_MBIT" 'BEGIN { print a + b }')
  fi
  printf 'scenario\t%s\t%s\t%s\t%s\t%s\t%s\n' "$SCENARIO" "$SIZE" "$n" "$SEED_UP_MBIT" "$sum_up" "$DOWN_MBIT" >>"$RESULTS"
  t_scenario=$EPOCHREALTIME
  for ((r = 1; r <= ROUNDS; r++)); do
    for client in $CLIENTS; do run_round "$client" "$r"; done
  done
  # What the emulation itself cost: the delayers' CPU time (utime + stime).
  ticks=0
  for pid in "${DELAYERS[@]}"; do
    [[ -r /proc/$pid/stat ]] && ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
  done
  echo "    netem-delay used $(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v a="$t_scenario" -v b="$EPOCHREALTIME" \
    'BEGIN { printf "%.1f CPU-s in %.0f s (%.0f %% of a core)", t / hz, b - a, 100 * t / hz / (b - a) }') for ${#DELAYERS[@]} namespaces"
  # And whether it kept up: how late the delayers released packets (each
  # prints its totals every 5 s; the worst namespace's figures).
  awk '/^stats / { for (i = 2; i <= NF; i++) { split($i, kv, "="); last[FILENAME, kv[1]] = kv[2] }; files[FILENAME] }
    END { for (f in files) { n += last[f, "packets"]; if (last[f, "late_p99_us"] > p99) p99 = last[f, "late_p99_us"]
            if (last[f, "late_max_us"] > mx) mx = last[f, "late_max_us"] }
          printf "    netem-delay released %d packets; late by at most %.1f ms for 99 %% of them (worst namespace), %.1f ms at worst\n", n, p99 / 1000, mx / 1000 }' \
    "$RUN"/net-*.delay
  DELAYERS=()
  netem_cleanup
done

echo
python3 "$TOOLS/report.py" "$RUN" | tee "$RUN/report.md"
echo "(per-round link utilisation: $RUN/links-*.csv; raw rows: $RESULTS)"
if [[ -n $ASSERT ]]; then
  leechers=$(awk -F'\t' '$1 == "node" && $6 != "seed"' "$RESULTS" | wc -l)
  bad=$(awk -F'\t' '$1 == "node" && $6 != "seed" && $13 != "ok"' "$RESULTS" | wc -l)
  # The seeder's upload in copies of the file, from its link's counter:
  # wire bytes, so TCP/IP headers and gRPC framing (4-5 %) count too.
  awk -F'\t' -v f="$SIZE" -v most="${MAX_SEED_COPIES:-}" '$1 == "node" && $6 == "seed" {
      c = $10 / f
      printf "%s round %s: the seeder uploaded %.2f copies of the file%s\n", $3, $4, c,
        most == "" ? " (not asserted)" : (c < most ? " (< " most ": ok)" : " (not < " most ")") }' "$RESULTS"
  over=$(awk -F'\t' -v f="$SIZE" -v most="${MAX_SEED_COPIES:-}" \
    'most != "" && $1 == "node" && $6 == "seed" && $10 / f >= most { n++ } END { print n + 0 }' "$RESULTS")
  if ((leechers == 0 || bad > 0)); then
    echo "FAILED: $bad of $leechers leecher(s) without the whole file and its digest" >&2
    exit 1
  fi
  echo "ok: all $leechers leechers have the whole file with the source's BLAKE3 digest"
  if ((over > 0)); then
    echo "FAILED: the seeder uploaded $MAX_SEED_COPIES copies of the file or more in $over round(s) (MAX_SEED_COPIES)" >&2
    exit 1
  fi
  [[ -z ${MAX_SEED_COPIES:-} ]] || echo "ok: the seeder uploaded fewer than $MAX_SEED_COPIES copies in every round"
fi
