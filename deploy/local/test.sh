#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine (as root) or a developer's: installs what
# is missing, brings up the local stack (real PostgreSQL, tansu, Alertmanager, SMTP, Loki,
# Promtail, Prometheus), checks formatting, lints, validates the shipped configs, and runs every
# unit and integration test (which run the shipped configs with the real programs).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"

step() { printf '\n== %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup)" >&2; exit 1; }
step "local stack"
bash deploy/local/stack.sh up

# shellcheck disable=SC1091
set -a; . "${ALERTPIPE_STATE:-$REPO/.state}/stack.env"; set +a

step "config checks"
amtool check-config config/alertmanager/alertmanager.yml
promtool check config config/prometheus/prometheus.yml
for f in config/loki/loki.yml config/loki/loki-distributed.yml; do
  "$STACK_LOKI_BIN" -config.file="$f" -config.expand-env=true -verify-config -log.level=warn
done
echo "building alertpipe (the first build takes 5-8 minutes on 2 cores, then seconds)"
cargo build --locked
BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug/alertpipe
"$BIN" check-config --config config/alertpipe.toml >/dev/null
# Compose, Kubernetes, Grafana, Promtail, Loki: schemas and agreement with alertpipe's config.
"$STACK_PYTHON" tests/deploy/check_deploy.py --alertpipe "$BIN" | grep -v '^ok '

step "format and lint"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

step "tests"
# Integration tests mostly wait on peers: run more of them at once than there are cores.
cargo test --locked --lib --bins --tests -- --test-threads "${TEST_THREADS:-8}"
