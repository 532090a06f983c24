#!/usr/bin/env bash
# Installs redis-server and redis-cli from Debian's packages when missing:
# the shared-backend tests start their own servers (no service manager).
set -euo pipefail
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# RUNLEVEL=1: where no policy-rc.d forbids it, the package's init script
# would start a system instance on 6379; the tests need none.
apt-get update -q
RUNLEVEL=1 apt-get install -y -q --no-install-recommends redis-server redis-tools
redis-server --version
