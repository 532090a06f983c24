#!/usr/bin/env bash
# hive's swarm on two tracker replicas sharing one Redis, in containers
# (docker-compose.replicas.yml): one tracker replica is killed during a large
# fetch, and the fetch completes through the other.
#
#   scripts/compose-replicas.sh          # build, start, play the demo, tear down (CI runs this)
#   scripts/compose-replicas.sh up       # build, seed big.bin on peer1, start, wait until healthy
#   scripts/compose-replicas.sh down     # stop and remove what `up` started, volumes included
#
# The demo: a file registered through tracker-a is located through tracker-b
# (one catalog); peer2 fetches the HIVE_COMPOSE_BIG_MIB (512) MiB big.bin from
# peer1, and when its progress passes 20%, tracker-a (the replica both peers
# use first) is killed (docker kill); the fetch must end with the original's
# BLAKE3 digest, peer2 must keep its session (same peer id) and be listed by
# tracker-b as holding every chunk. Needs redis-server on the host (its
# binary and libraries go into the image): scripts/install-redis.sh.
#
# Environment: COMPOSE_PROJECT_NAME (hive-replicas unless set),
# HIVE_COMPOSE_BIG_MIB, HIVE_COMPOSE_WAIT (seconds to wait for health, 120).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-demo}
case $mode in
  demo | up | down) ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [demo|up|down]" >&2; exit 2 ;;
esac
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-hive-replicas}
COMPOSE_YML=docker-compose.replicas.yml DEMO=compose-replicas
source scripts/compose-lib.sh

# Debian's redis-server and redis-cli and every shared library `ldd` lists
# for them, at the same paths, into docker/bin/redis: the image's root.
stage_redis() {
  local root=docker/bin/redis bin lib
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
    fail "redis-server is not installed: run scripts/install-redis.sh"
  rm -rf "$root"
  mkdir -p "$root/usr/bin"
  for bin in redis-server redis-cli; do
    # redis-server is a link to redis-check-rdb, which picks its part by argv[0].
    cp "$(readlink -f "$(command -v "$bin")")" "$root/usr/bin/$bin"
    for lib in $(ldd "$(command -v "$bin")" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  done
  chmod -R a+rX "$root"
  echo "staged $(find "$root" -type f | wc -l) files, $(du -sh "$root" | cut -f1): $(find "$root" -type f -printf '%f ' | sort)"
}

build() {
  scripts/compose-demo.sh build
  # The peers are given both replicas in one comma-separated list; a build
  # whose peerctl takes one URL only stops here, not at an unhealthy swarm.
  if docker/bin/peerctl --tracker http://127.0.0.1:1,http://127.0.0.1:1 files 2>&1 | grep -q 'bad tracker URL'; then
    fail "this build's peer and peerctl take one --tracker URL, not a list: the replica demo needs trackers given as a comma-separated list"
  fi
  step "staging Debian's redis-server and its libraries; building hive-redis:local (FROM scratch)"
  stage_redis
  say "${COMPOSE[*]} -f $COMPOSE_YML build redis"
  compose build -q redis
  docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^hive-redis:local ' || true
}

start_swarm() {
  step "generating big.bin (${HIVE_COMPOSE_BIG_MIB:-512} MiB) on the host for peer1"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/hive-replicas.XXXXXX")
  mkdir -p "$WORK/peer1" "$WORK/out"
  head -c $((${HIVE_COMPOSE_BIG_MIB:-512} << 20)) /dev/urandom >"$WORK/peer1/big.bin"
  chmod 0644 "$WORK/peer1/big.bin"
  step "creating Redis, two tracker replicas and two peers; seeding peer1's volume"
  c up --no-start
  say "docker cp big.bin $(name_of "$(cid peer1)"):/data/"
  docker cp "$WORK/peer1/big.bin" "$(cid peer1):/data/"
  say "${COMPOSE[*]} up -d"
  c up -d
  wait_healthy redis tracker-a tracker-b peer1 peer2
}

declare -A ID NAME IP

demo() {
  local svc
  for svc in redis tracker-a tracker-b peer1 peer2; do
    ID[$svc]=$(cid "$svc")
    NAME[$svc]=$(name_of "${ID[$svc]}")
    IP[$svc]=$(ip_of "${ID[$svc]}")
    printf '%-10s %-28s %s\n' "$svc" "${NAME[$svc]}" "${IP[$svc]}"
  done

  step "one catalog: peer1 registered big.bin through tracker-a; tracker-b lists it"
  show peer2 --tracker http://tracker-b:65001 locate big.bin
  ctl peer2 --tracker http://tracker-b:65001 --json locate big.bin >"$WORK/locate.json"
  [[ $(json "$WORK/locate.json" "[h['addr'] for h in j['holders']]") == "['${IP[peer1]}:65050']" ]] ||
    fail "tracker-b does not list peer1 as the holder of big.bin: $(cat "$WORK/locate.json")"
  ok "tracker-b lists peer1 (${IP[peer1]}:65050) holding big.bin"
  ctl peer2 --json status >"$WORK/status.json"
  local id_before
  id_before=$(json "$WORK/status.json" 'j["peer_id"]')
  echo "peer2 is peer $id_before, on $(json "$WORK/status.json" 'j["tracker"]')"

  fetch_through_replica_kill

  step "after the kill: peer2 kept its session, and tracker-b lists it holding all of big.bin"
  ctl peer2 --json status >"$WORK/status.json"
  [[ $(json "$WORK/status.json" 'j["peer_id"]') == "$id_before" ]] ||
    fail "peer2 has a new session: $(cat "$WORK/status.json")"
  ok "peer2 is still peer $id_before, now on $(json "$WORK/status.json" 'j["tracker"]')"
  show peer2 health
  ok "peer2 is SERVING with tracker-a dead"
  local chunks
  ctl peer1 --tracker http://tracker-b:65001 --json locate big.bin >"$WORK/locate.json"
  chunks=$(json "$WORK/locate.json" 'j["chunk_count"]')
  [[ $(json "$WORK/locate.json" "[h['chunks'] for h in j['holders'] if h['addr'] == '${IP[peer2]}:65050']") == "[[[1, $chunks]]]" ]] ||
    fail "tracker-b does not list peer2 holding chunks 1-$chunks of big.bin: $(cat "$WORK/locate.json")"
  ok "tracker-b lists peer2 (${IP[peer2]}:65050) holding chunks 1-$chunks: registered after tracker-a died"
}

# peer2 fetches big.bin from peer1; when its JSON progress passes 20%,
# tracker-a is killed; the fetch must finish, with the original's digest.
fetch_through_replica_kill() {
  local mib=${HIVE_COMPOSE_BIG_MIB:-512}
  step "peer2 fetches the $mib MiB big.bin; tracker-a is killed mid-way"
  say "docker exec ${NAME[peer2]} /peerctl --json fetch big.bin"
  local fifo=$WORK/fetch.fifo line done_b=0 wanted=0 pct=0 n=0 killed_at= after=0
  mkfifo "$fifo"
  timeout 600 docker exec "${ID[peer2]}" /peerctl --json fetch big.bin >"$fifo" 2>"$WORK/fetch.err" </dev/null &
  local fetch_pid=$!
  : >"$WORK/big.jsonl"
  while IFS= read -r line; do
    printf '%s\n' "$line" >>"$WORK/big.jsonl"
    [[ $line =~ \"event\":\"progress\" ]] || { echo "$line"; continue; }
    [[ $line =~ \"bytes_done\":([0-9]+) ]] && done_b=${BASH_REMATCH[1]}
    [[ $line =~ \"bytes_wanted\":([0-9]+) ]] && wanted=${BASH_REMATCH[1]}
    ((wanted > 0)) && pct=$((done_b * 100 / wanted))
    n=$((n + 1))
    if [[ -z $killed_at ]] && ((pct >= 20)); then
      killed_at=$pct
      docker kill "${ID[tracker-a]}" >/dev/null
      echo "progress $pct% ($done_b of $wanted bytes)"
      echo "--- docker kill ${NAME[tracker-a]}"
      continue
    fi
    [[ -n $killed_at ]] && ((done_b < wanted)) && after=$((after + 1))
    ((n % 5 == 1)) && echo "progress $pct% ($done_b of $wanted bytes)"
  done <"$fifo"
  local rc=0
  wait "$fetch_pid" || rc=$?
  [[ -n $killed_at ]] || fail "the fetch ended before it reached 20%; raise HIVE_COMPOSE_BIG_MIB"
  ((rc == 0)) || { cat "$WORK/fetch.err" >&2; fail "peerctl fetch big.bin exited with status $rc"; }
  grep -q '"event":"done"' "$WORK/big.jsonl" || fail "peerctl fetch big.bin printed no done event"
  ((after > 0)) || fail "no progress after the kill at $killed_at%: the fetch was over too soon (raise HIVE_COMPOSE_BIG_MIB)"
  [[ $(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "${ID[tracker-a]}") == "exited 137" ]] ||
    fail "tracker-a is not dead after docker kill"
  ok "tracker-a was killed (SIGKILL) at $killed_at%; the fetch went on ($after progress reports after it)"
  local host got
  say "docker cp ${NAME[peer2]}:/data/big.bin . && cmp big.bin <original>"
  docker cp "${ID[peer2]}:/data/big.bin" "$WORK/out/big.bin"
  cmp "$WORK/peer1/big.bin" "$WORK/out/big.bin" || fail "big.bin in ${NAME[peer2]} differs from the original"
  rm -f "$WORK/out/big.bin"
  host=$(b3 "$WORK/peer1/big.bin")
  got=$(json "$WORK/big.jsonl" 'j["digest"]')
  [[ $got == "$host" ]] || fail "digests differ: host BLAKE3 $host, fetch reported $got"
  ok "the fetch completed in $(json "$WORK/big.jsonl" 'round(j["elapsed_us"] / 1e6, 1)')s; BLAKE3 $host (host) = the fetch's; byte for byte the original"
}

case $mode in
  down)
    say "${COMPOSE[*]} -f $COMPOSE_YML down -v"
    compose down -v --remove-orphans
    ;;
  up)
    build
    start_swarm
    step "the swarm is up"
    compose ps
    cat <<EOF

  ${COMPOSE[*]} -f $COMPOSE_YML exec -T peer2 /peerctl files
  ${COMPOSE[*]} -f $COMPOSE_YML exec -T peer2 /peerctl fetch big.bin
  ${COMPOSE[*]} -f $COMPOSE_YML kill tracker-a     # peers move to tracker-b
  $0 down
EOF
    ;;
  demo)
    echo "replica-kill demo with ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?')), project $COMPOSE_PROJECT_NAME"
    build
    step "removing what a previous run may have left"
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    trap teardown EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start_swarm
    demo
    ;;
esac
