#!/usr/bin/env bash
# The web pages in a real browser (tests/browser.rs): installs Debian's
# chromium and chromium-driver when missing, starts chromedriver on a free
# loopback port, and runs the browser test against it, headless, under a
# timeout. Screenshots go to docs/screenshots/ (HIVE_SCREENSHOTS to change,
# empty for none).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends chromium chromium-driver
fi
chromium --version
chromedriver --version

# Built first, so the test's timeout is not spent compiling the daemons.
cargo build --quiet --bins
cargo test --quiet -p hive-e2e --test browser --no-run

WORK=$(mktemp -d)
DRIVER_PID=
cleanup() {
    if [[ -n $DRIVER_PID ]]; then
        kill "$DRIVER_PID" 2>/dev/null || true
        wait "$DRIVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# chromedriver cannot take port 0: take a free port from the kernel, let it
# go, and hand it over; if another process took it meanwhile, chromedriver
# exits and we try another.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
for attempt in 1 2 3 4 5; do
    PORT=$(free_port)
    chromedriver --port="$PORT" --allowed-ips=127.0.0.1 >"$WORK/chromedriver.log" 2>&1 &
    DRIVER_PID=$!
    for ((i = 0; i < 200; i++)); do
        if curl -sf "http://127.0.0.1:$PORT/status" 2>/dev/null | grep -q '"ready": *true'; then
            break 2
        fi
        kill -0 "$DRIVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill "$DRIVER_PID" 2>/dev/null || true
    wait "$DRIVER_PID" 2>/dev/null || true
    DRIVER_PID=
    echo "chromedriver did not start on port $PORT (attempt $attempt):" >&2
    cat "$WORK/chromedriver.log" >&2
done
if [[ -z $DRIVER_PID ]]; then
    echo "browser-test: chromedriver would not start" >&2
    exit 1
fi
echo "chromedriver on 127.0.0.1:$PORT"

SHOTS=${HIVE_SCREENSHOTS-$PWD/docs/screenshots}
if [[ -n $SHOTS ]]; then
    mkdir -p "$SHOTS"
fi
HIVE_WEBDRIVER="http://127.0.0.1:$PORT" HIVE_SCREENSHOTS="$SHOTS" \
    timeout 600 cargo test -p hive-e2e --test browser -- --ignored --nocapture
if [[ -n $SHOTS ]]; then
    echo "screenshots in $SHOTS:"
    ls -l "$SHOTS"
fi
