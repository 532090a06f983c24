#!/usr/bin/env bash
# Every test: the README's second command, and what .ci/run runs.
# Installs redis-server from Debian's packages when it is missing (the
# shared-store suites start their own servers), builds the daemons the
# end-to-end suites start, then runs `cargo test --workspace` with any
# arguments given (e.g. `scripts/test.sh --test contract`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/check-tests.sh
scripts/install-redis.sh
# Built first, so no suite's first test spends its timeout compiling them
# (the harness's own build, tests/common `bin`, is then a no-op).
profile=()
for arg in "$@"; do [[ $arg != --release ]] || profile=(--release); done
cargo build --quiet --bins "${profile[@]}"
cargo test --workspace "$@"
