#!/usr/bin/env bash
# Mutation testing with cargo-mutants: plants one small bug at a time (a
# function that returns a default, a `<` turned into `<=`, a deleted `!`)
# into the code that hive's correctness rests on, runs that code's own fast
# tests against each, and counts the bugs no test caught. Results and their
# figures are in docs/RELIABILITY.md ("Mutation testing").
#
#   scripts/mutants.sh                 # all three targets, every mutant (hours on 2 cores)
#   scripts/mutants.sh core            # one target: core | registry | engine
#   SHARD=1/4 scripts/mutants.sh core  # a quarter of its mutants (round robin)
#   MUTANTS_ARGS='--list' scripts/mutants.sh engine   # what it would try
#
# Targets and the tests each mutant must fail:
#   core      src/ (names, chunk math, chunk sets, digests, manifests, wire
#             conversions): the core crate's unit tests and its property
#             tests (tests/properties.rs); generated code is left alone.
#   registry  services/tracker/src/registry/: the tracker crate's unit tests.
#   engine    services/peer/src/fetch/engine.rs and engine/: the peer crate's unit tests
#             (the engine's fakes under paused time).
# The process-level suites are not run for each mutant: they take minutes,
# and the point is how much the fast tests see.
#
# Not in CI: even a quarter of the core target takes about half an hour on
# two cores. Installs cargo-mutants (pinned) from crates.io into
# target/tools on first use. Output: target/mutants/TARGET/mutants.out
# (caught.txt, missed.txt, unviable.txt, timeout.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=27.1.0
TOOLS=$PWD/target/tools
MUTANTS=$TOOLS/bin/cargo-mutants
if ! "$MUTANTS" mutants --version 2>/dev/null | grep -q "$VERSION"; then
  echo "==> installing cargo-mutants $VERSION into $TOOLS"
  cargo install --quiet --locked --root "$TOOLS" cargo-mutants --version "$VERSION"
fi

targets=("$@")
((${#targets[@]})) || targets=(core registry engine)
shard=()
[[ -n ${SHARD:-} ]] && shard=(--shard "$SHARD" --sharding round-robin)
extra=()
[[ -n ${MUTANTS_ARGS:-} ]] && read -r -a extra <<<"$MUTANTS_ARGS"

run() {
  local target=$1
  shift
  local out=target/mutants/$target
  mkdir -p "$out"
  echo "==> $target"
  # --in-place would edit this checkout; the default copies the tree
  # (without target/: the first build there is cold) into a scratch
  # directory instead, so this checkout can be worked on meanwhile.
  "$MUTANTS" mutants --no-shuffle --copy-target=false --output "$out" \
    "${shard[@]}" "${extra[@]}" "$@" || true
  if [[ -d $out/mutants.out ]]; then
    local f n
    for f in caught missed timeout unviable; do
      n=0
      [[ -f $out/mutants.out/$f.txt ]] && n=$(wc -l <"$out/mutants.out/$f.txt")
      printf '    %-9s %s\n' "$f" "$n"
    done
  fi
}

for t in "${targets[@]}"; do
  case $t in
  core)
    run core -p hive --file 'src/*.rs' --exclude src/pb.rs \
      --cargo-test-arg=--lib --cargo-test-arg=--test=properties
    ;;
  registry)
    run registry -p hive-tracker --file 'services/tracker/src/registry/*.rs' \
      --cargo-test-arg=--lib
    ;;
  engine)
    run engine -p hive-peer --file services/peer/src/fetch/engine.rs \
      --file 'services/peer/src/fetch/engine/*.rs' \
      --exclude services/peer/src/fetch/engine/tests.rs \
      --exclude services/peer/src/fetch/engine/fakes.rs \
      --cargo-test-arg=--lib
    ;;
  *)
    echo "scripts/mutants.sh: unknown target $t (core, registry or engine)" >&2
    exit 2
    ;;
  esac
done
