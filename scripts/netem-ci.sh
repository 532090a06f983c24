#!/usr/bin/env bash
# The CI check of hive on emulated links (docs/PERFORMANCE.md, "Swarms on
# emulated links"): one flash crowd of 1 seeder and 4 leechers, a 4 MiB
# file, every upload capped at 20 Mbit/s, 10 ms one-way delay, hive only.
# Fails unless every leecher ends with the whole file and the source's
# BLAKE3 digest, and unless the seeder uploaded fewer than 1.2 copies of the
# file (MAX_SEED_COPIES; counted on its link, headers included): the swarm,
# not the seeder, must carry the duplicates. Behaviour, not time.
# Needs root (network namespaces); about a minute once the release
# binaries are built. Knobs as for scripts/netem-swarm.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export SIZE_MIB=${SIZE_MIB:-4} LEECHERS=${LEECHERS:-4} UP_MBIT=${UP_MBIT:-20} DELAY_MS=${DELAY_MS:-10}
export ROUNDS=${ROUNDS:-1} CLIENTS=${CLIENTS:-hive} TIMEOUT_S=${TIMEOUT_S:-60} STALL_S=${STALL_S:-15} ASSERT=1
export MAX_SEED_COPIES=${MAX_SEED_COPIES:-1.2}
exec scripts/netem-swarm.sh flash
