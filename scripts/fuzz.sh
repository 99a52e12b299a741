#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ for SECONDS (default 30), one after
# the other, starting from the seeds in fuzz/seeds/<target>/ and keeping
# what each run finds in fuzz/corpus/<target>/ (not committed). A crash
# stops the script; its input is in fuzz/artifacts/<target>/ and
# `cargo +nightly fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...`
# replays it. Every crash found becomes a regression unit test beside the
# code it was in.
#
# Needs the nightly toolchain (libFuzzer's instrumentation) and cargo-fuzz
# (installed here with `cargo install` when missing). Targets are built
# without a sanitizer (`-s none`): regfs has next to no unsafe code, and
# uninstrumented runs make many more executions in the time.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${1:-30}"
shift || true

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

for t in "${targets[@]}"; do
    echo "== fuzz $t for ${SECS}s"
    mkdir -p "fuzz/corpus/$t"
    seeds=()
    if [ -d "fuzz/seeds/$t" ]; then seeds=("fuzz/seeds/$t"); fi
    cargo +nightly fuzz run -s none "$t" "fuzz/corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 |
        grep -E '^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|.*(panicked|SUMMARY|Test unit written|deadly signal))' || true
    if compgen -G "fuzz/artifacts/$t/*" >/dev/null; then
        echo "fuzz.sh: $t found a crash: fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "fuzz.sh: ${#targets[@]} targets, ${SECS}s each: no crash"
