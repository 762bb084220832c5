#!/usr/bin/env bash
# Sets up memvisor and runs every check and test: format, lints, unit tests, and end-to-end
# tests that boot real guests (one at a time; see .config/nextest.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=debug WITH_TEST_TOOLS=1 ./scripts/setup.sh
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
# The Debian package test builds the package from the workspace.
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo nextest run --workspace
# Short fuzzing runs of every parser; scripts/fuzz.sh 600 (the default) runs longer.
./scripts/fuzz.sh 20
