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
# Built first, so no suite's first test spends its timeout compiling them;
# HIVE_TEST_BINS_BUILT tells the suites' harness not to build them again
# (tests/common `bin`).
profile=()
for arg in "$@"; do [[ $arg != --release ]] || profile=(--release); done
cargo build --quiet --bins "${profile[@]}"
HIVE_TEST_BINS_BUILT=1 cargo test --workspace "$@"
