#!/usr/bin/env bash
# hive's main job, on loopback: builds the binaries, starts a tracker and
# three peers with generated files, plays the seed's scenario with peerctl,
# then a whole-file swarm fetch, and stops everything it started. client3
# serves the peer web UI and the tracker its swarm page, both on loopback
# (their URLs are printed); with --keep (or KEEP=1) the swarm and both pages
# stay up at the end until Ctrl-C, to look around in them.
#
#   scripts/demo.sh            # release build (the first build takes a few minutes)
#   HIVE_PROFILE=debug scripts/demo.sh
#   scripts/demo.sh --keep     # then leave the swarm and both web pages up
set -euo pipefail
cd "$(dirname "$0")/.."

keep=${KEEP:-0}
case ${1:-} in
  --keep) keep=1 ;;
  "") ;;
  *) echo "usage: scripts/demo.sh [--keep]" >&2; exit 2 ;;
esac

profile=${HIVE_PROFILE:-release}
echo "==> building hive ($profile)"
if [[ $profile == release ]]; then
  cargo build --release --bins --quiet
else
  cargo build --bins --quiet
fi
BIN=$PWD/target/$profile
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hive-demo.XXXXXX")
source scripts/lib.sh
trap 'hive_cleanup; rm -rf "$WORK"' EXIT

step() { printf '\n==> %s\n' "$*"; }
show() { printf '$ peerctl %s\n' "${*:2}"; "$@"; }

mkdir -p "$WORK/client1" "$WORK/client2" "$WORK/client3"
text_file "$WORK/client2/23" 69630          # the seed's `23`: 68 chunks
text_file "$WORK/client1/bse" 1822          # the seed's `bse`: 2 chunks
head -c $((48 << 20)) /dev/urandom >"$WORK/client2/big.bin"

step "a tracker and three peers on loopback"
start_tracker tracker --in-memory --web 127.0.0.1:0
echo "tracker  $TRACKER"
start_peer client2 "$WORK/client2"; C2=$PEER_CONTROL; L2=$PEER_LISTEN
echo "client2  $L2 (shares 23, big.bin)"
start_peer client1 "$WORK/client1"; C1=$PEER_CONTROL; L1=$PEER_LISTEN
echo "client1  $L1 (shares bse)"
start_peer client3 "$WORK/client3" --web 127.0.0.1:0; C3=$PEER_CONTROL; L3=$PEER_LISTEN
echo "client3  $L3 (shares nothing yet)"

step "web UIs (open them while the demo runs; --keep leaves them up)"
WEB3=$(wait_line "$WORK/client3.out" "web UI listening on")
WEBT=$(wait_line "$WORK/tracker.out" "web UI listening on")
echo "client3's web UI:          $WEB3"
echo "the tracker's swarm page:  $WEBT"
export HIVE_TRACKER="http://$TRACKER"
ctl() { local peer=$1; shift; "$BIN/peerctl" --control "$peer" "$@"; }

step "message 2: the files the tracker knows, with holders and chunks"
show "$BIN/peerctl" files

step "message 3: where the chunks of 23 are"
show "$BIN/peerctl" locate 23

step "messages 5 and 4: client1 fetches chunk 2 of 23 from client2"
printf '$ peerctl --dir client1 fetch 23 --chunk 2 --from %s\n' "$L2"
ctl "$C1" fetch 23 --chunk 2 --from "$L2"

step "the tracker now lists client1 as a holder of chunk 2"
show "$BIN/peerctl" locate 23

step "a third peer fetches chunk 2 from client1"
printf '$ peerctl --dir client3 fetch 23 --chunk 2 --from %s\n' "$L1"
ctl "$C3" fetch 23 --chunk 2 --from "$L1"

step "client3 fetches all of 23 and bse from every holder at once"
echo '$ peerctl --dir client3 fetch 23 && peerctl --dir client3 fetch bse'
ctl "$C3" fetch 23
ctl "$C3" fetch bse
cmp "$WORK/client2/23" "$WORK/client3/23" && cmp "$WORK/client1/bse" "$WORK/client3/bse"
echo "client3's copies are byte for byte the originals"

step "client1 fetches the 48 MiB big.bin from client2 and client3 (which fetches it too)"
echo '$ peerctl --dir client3 fetch big.bin &  peerctl --dir client1 fetch big.bin'
ctl "$C3" fetch big.bin >"$WORK/fetch3.txt" &
fetch3=$!
ctl "$C1" fetch big.bin
wait "$fetch3"
cat "$WORK/fetch3.txt"
cmp "$WORK/client2/big.bin" "$WORK/client1/big.bin" && cmp "$WORK/client2/big.bin" "$WORK/client3/big.bin"
echo "both copies match the original"

step "what client1 holds now"
echo '$ peerctl --dir client1 status'
ctl "$C1" status

step "message 6: client1 leaves; its holdings vanish from the tracker"
echo '$ peerctl --dir client1 leave'
ctl "$C1" leave
show "$BIN/peerctl" files

if [[ $keep == 1 ]]; then
  step "the swarm stays up (client3's web UI: $WEB3, the swarm page: $WEBT); Ctrl-C stops everything"
  nap=
  trap 'kill $nap 2>/dev/null; exit 0' INT TERM
  while :; do sleep 3600 & nap=$!; wait "$nap"; done
fi

step "done; stopping the tracker and the remaining peers"
