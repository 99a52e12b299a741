#!/usr/bin/env bash
# The one command that runs every check, on a fresh machine too:
# dependencies, formatting, clippy (warnings are errors), all tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
# The ORAS CLI and crane that install-deps.sh built (tests/support/peers.rs
# looks there too, for `cargo test` run by hand).
if [ -x /usr/local/go/bin/go ]; then PATH="/usr/local/go/bin:$PATH"; fi
PATH="$(go env GOPATH)/bin:$PATH"
export PATH

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

echo "== cargo test"
cargo test
