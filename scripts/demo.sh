#!/usr/bin/env bash
# Sets up memvisor and runs its demo: the seed example on three real VMs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec target/x86_64-unknown-linux-gnu/release/memvisor demo
