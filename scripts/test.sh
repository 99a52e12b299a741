#!/usr/bin/env bash
# The one command that runs every check, on a fresh machine too:
# dependencies, formatting, clippy (warnings are errors), all tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

echo "== cargo test"
cargo test
