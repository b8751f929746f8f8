#!/usr/bin/env bash
# The test command: set up a fresh machine, then run every check CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --exclude tests
# Integration tests against real OVS: --show-output prints how many cases,
# packets and conntrack dumps each differential test compared.
cargo test -p tests -- --show-output
# The criterion benches, each benchmark once in criterion's test mode (dev
# profile, no timing) at reduced sizes (bench::quick: 500 Services, 16k
# connections, ...; a few seconds), so they cannot rot. Numbers: cargo bench
# -p bench (full sizes).
cargo test -p bench --bench '*'
