#!/usr/bin/env bash
# The long tier of the reliability tests, in one command (the quick tier is
# `cargo test`, which CI runs):
#
#   bash tests/long_tier.sh
#
# 1. SIGKILL soak: a child writer with sync durability killed at random moments,
#    KILLS times (default 2000); every acknowledged position must survive.
# 2. The property test of the query layer (with reopen, checkpoint and
#    compaction steps) against its model, CASES cases (default 5000), release.
# 3. Every fuzz target for FUZZ_SECONDS each (default 3600), if cargo-fuzz is
#    installed (`cargo install cargo-fuzz`); it runs on the stable toolchain with
#    RUSTC_BOOTSTRAP=1. New corpus entries land in fuzz/corpus/, crashes in
#    fuzz/artifacts/ (turn each into a regression test in tests/).
#
# Environment: KILLS, CASES, FUZZ_SECONDS, SEED (proptest seed), TARGETS (fuzz
# targets, default all). Each step prints its figures; the script stops at the
# first failure. Record the figures in docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/.."

KILLS=${KILLS:-2000}
CASES=${CASES:-5000}
FUZZ_SECONDS=${FUZZ_SECONDS:-3600}
TARGETS=${TARGETS:-"frame_decode segment_scan index_decode checkpoint_parse import_line ops_crash column_parse column_build"}

echo "== 1. SIGKILL soak: $KILLS kills"
TABLELOG_KILL_ITERATIONS=$KILLS cargo test --release --test kill -- --nocapture

echo "== 2. model property test: $CASES cases"
env TABLELOG_PROPTEST_CASES="$CASES" ${SEED:+TABLELOG_PROPTEST_SEED=$SEED} \
    cargo test --release --test model -- --nocapture

echo "== 3. fuzzing: $FUZZ_SECONDS s per target"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed (cargo install cargo-fuzz): skipping the fuzz step"
    exit 0
fi
cd fuzz
stamp=$(mktemp)
for t in $TARGETS; do
    echo "-- $t"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 2>&1 |
        grep -E "stat::number_of_executed_units|stat::new_units_added|Done|ERROR|SUMMARY|panicked" || true
    if find artifacts/"$t" -name 'crash-*' -newer "$stamp" 2>/dev/null | grep -q .; then
        echo "$t: crash artifacts in fuzz/artifacts/$t" >&2
        exit 1
    fi
done
echo "long tier passed"
