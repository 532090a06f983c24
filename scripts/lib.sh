# Shared helpers for hive's scripts: start daemons on port 0, learn their
# addresses from what they print, and stop everything on exit.
# Source it; it expects BIN (a directory holding tracker, peer, peerctl)
# and WORK (a scratch directory).

HIVE_PIDS=()

hive_cleanup() {
  local pid
  for pid in "${HIVE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${HIVE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  HIVE_PIDS=()
}

# wait_line FILE PATTERN: waits (up to 60 s) until FILE has a line matching
# PATTERN, and prints its last word (the address).
wait_line() {
  local file=$1 pattern=$2 i
  for ((i = 0; i < 1200; i++)); do
    if grep -q "$pattern" "$file" 2>/dev/null; then
      grep "$pattern" "$file" | head -n1 | awk '{print $NF}'
      return 0
    fi
    sleep 0.05
  done
  echo "timed out waiting for '$pattern' in $file" >&2
  return 1
}

# start_tracker NAME [ARGS...]: sets TRACKER (host:port).
start_tracker() {
  local name=$1; shift
  "$BIN/tracker" --listen 127.0.0.1:0 --data-dir "$WORK/$name-data" "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.log" &
  HIVE_PIDS+=($!)
  TRACKER=$(wait_line "$WORK/$name.out" "^listening on")
}

# start_peer NAME DIR [ARGS...]: sets PEER_LISTEN and PEER_CONTROL (the
# control socket's path, for `peerctl --control`), and waits until the peer
# is registered (its health turns SERVING). TRACKER_SCHEME=https for a TLS
# tracker (the peer then needs the --tls-* flags in ARGS).
start_peer() {
  local name=$1 dir=$2; shift 2
  mkdir -p "$dir"
  "$BIN/peer" --tracker "${TRACKER_SCHEME:-http}://$TRACKER" --listen 127.0.0.1:0 --dir "$dir" "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.log" &
  HIVE_PIDS+=($!)
  PEER_LISTEN=$(wait_line "$WORK/$name.out" "^listening on")
  PEER_CONTROL=$(wait_line "$WORK/$name.out" "control on")
  local i
  for ((i = 0; i < 600; i++)); do
    "$BIN/peerctl" --control "$PEER_CONTROL" health >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "peer $name did not register; its log:" >&2
  tail -n 20 "$WORK/$name.log" >&2
  return 1
}

# tracker_unlimited: sets the array `unlimited` to the flags that lift the
# tracker's per-address and per-session rate limits and per-address catalog
# quotas, for a $BIN/tracker that has them. Benchmarks need it: every peer there calls from 127.0.0.1, which
# a real swarm spreads over many addresses.
tracker_unlimited() {
  unlimited=()
  local help flag
  help=$("$BIN/tracker" --help)
  for flag in --ip-rate --peer-rate; do
    if grep -q -- "$flag " <<<"$help"; then unlimited+=("$flag" 0); fi
  done
  # The catalog's per-address quotas, likewise.
  if grep -q -- "--max-files-per-address " <<<"$help"; then
    unlimited+=(--max-files-per-address 100000000 --max-catalog-mib-per-address 1048576)
  fi
}

# text_file PATH SIZE: writes SIZE bytes of readable text.
text_file() {
  python3 - "$1" "$2" <<'PY'
import sys
path, size = sys.argv[1], int(sys.argv[2])
line = "According to hive, every chunk is verified before it is served. "
text = "".join(f"{i:05d} {line}\n" for i in range(size // len(line) + 2))
open(path, "w").write(text[:size])
PY
}
