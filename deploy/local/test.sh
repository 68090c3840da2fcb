#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine (as root) or a developer's: installs what
# is missing, brings up the local stack (real PostgreSQL, tansu, Alertmanager, SMTP), checks
# formatting, lints, validates the shipped configs, and runs every unit and integration test.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"

step() { printf '\n== %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup)" >&2; exit 1; }
step "local stack"
bash deploy/local/stack.sh up

step "config checks"
amtool check-config config/alertmanager/alertmanager.yml
cargo run --quiet --locked -- check-config --config config/alertpipe.toml >/dev/null

step "format and lint"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

step "tests"
# Integration tests mostly wait on peers: run more of them at once than there are cores.
cargo test --locked --all-targets -- --test-threads "${TEST_THREADS:-8}"
