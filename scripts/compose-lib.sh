# Shared helpers of the compose scripts (compose-demo.sh, compose-replicas.sh).
# Source it from the repository root after setting COMPOSE_YML (the compose
# file) and DEMO (the name the summary line prints).

if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
else
  echo "error: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi
# COMPOSE_OVERRIDE, if set, is a second file laid over COMPOSE_YML.
compose() { "${COMPOSE[@]}" -f "$COMPOSE_YML" ${COMPOSE_OVERRIDE:+-f "$COMPOSE_OVERRIDE"} "$@" </dev/null; }
# c ARGS...: compose, without the progress lines docker-compose 1.29 writes
# when it has no terminal; fails with its output when compose fails.
c() {
  local rc=0
  compose "$@" >"$CLOG" 2>&1 || rc=$?
  tr -d '\r' <"$CLOG" | grep -v -e '\.\.\. *$' || true
  ((rc == 0)) || fail "${COMPOSE[*]} $* exited with status $rc"
}
CLOG=$(mktemp "${TMPDIR:-/tmp}/hive-compose-log.XXXXXX")
WORK=
remove_files() { rm -rf "$CLOG" ${WORK:+"$WORK"}; }
trap remove_files EXIT

started=$SECONDS
step() { printf '\n==> %s  [%ds]\n' "$*" $((SECONDS - started)); }
say() { printf '$ %s\n' "$*"; }
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; exit 1; }

cid() { # cid SERVICE: the container id of SERVICE (running or not)
  local id
  id=$(compose ps -a -q "$1" 2>/dev/null | head -n1) || true
  [[ -n $id ]] || fail "no container for service $1"
  echo "$id"
}
ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }
name_of() { docker inspect -f '{{.Name}}' "$1" | sed 's,^/,,'; }

wait_healthy() {
  local limit=${HIVE_COMPOSE_WAIT:-120} svc id state
  local deadline=$((SECONDS + limit))
  for svc; do
    id=$(cid "$svc")
    while :; do
      state=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
      case $state in
        "running healthy") break ;;
        "running unhealthy" | exited* | dead*)
          docker logs --tail 30 "$id" >&2 || true
          fail "$svc is $state" ;;
      esac
      if ((SECONDS >= deadline)); then
        docker logs --tail 30 "$id" >&2 || true
        fail "$svc not healthy after ${limit}s (state: $state)"
      fi
      sleep 0.5
    done
    echo "$svc is healthy"
  done
}

teardown() {
  local rc=$?
  trap - EXIT INT TERM
  if ((rc != 0)); then
    echo >&2
    echo "==> the demo failed (exit $rc); the swarm's state and recent logs:" >&2
    compose ps -a >&2 || true
    compose logs --no-color --tail 15 >&2 || true
  fi
  step "tearing down"
  say "${COMPOSE[*]} down -v"
  compose down -v --remove-orphans >"$CLOG" 2>&1 || cat "$CLOG"
  remove_files
  printf '\n%s took %ds\n' "$DEMO" $((SECONDS - started))
  if ((rc == 0)); then
    echo "$DEMO: $pass passed, 0 failed"
  else
    echo "$DEMO: $pass passed, 1 failed"
  fi
  exit "$rc"
}


# BLAKE3 of a host file, computed independently of hive: b3sum if installed,
# else the `blake3` package from PyPI in a venv under target/tools.
b3() {
  if command -v b3sum >/dev/null; then
    b3sum --no-names "$1"
    return
  fi
  local venv=$PWD/target/tools/blake3
  if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import blake3' 2>/dev/null; then
    echo "(installing the blake3 package into $venv)" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check blake3 >&2
  fi
  "$venv/bin/python" - "$1" <<'PY'
import sys, blake3
h = blake3.blake3()
with open(sys.argv[1], "rb") as f:
    while block := f.read(1 << 20):
        h.update(block)
print(h.hexdigest())
PY
}

# json FILE EXPR: evaluates a python expression over the JSON in FILE (`j`),
# or over its last line holding {"event":"done"} when FILE is a fetch's output.
json() {
  python3 - "$1" "$2" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
lines = [l for l in text.splitlines() if l.strip()]
events = [json.loads(l) for l in lines] if lines and all(l.startswith("{") for l in lines) else []
done = [e for e in events if e.get("event") == "done"]
j = done[-1] if done else json.loads(text)
print(eval(sys.argv[2], {"j": j}))
PY
}

# ctl SERVICE ARGS...: peerctl inside SERVICE's container, where the peer's
# loopback control port is; bounded, so a stuck swarm fails the demo.
ctl() {
  local svc=$1 rc=0
  shift
  timeout 300 docker exec "${ID[$svc]}" /peerctl "$@" </dev/null || rc=$?
  ((rc != 124)) || fail "peerctl $* in $svc did not finish within 300s"
  return "$rc"
}
show() { local svc=$1; shift; say "docker exec ${NAME[$svc]} /peerctl $*"; ctl "$svc" "$@"; }
