#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine (as root) or a developer's: installs what
# is missing, brings up the local stack (real PostgreSQL, Apache Kafka, Alertmanager, SMTP,
# Prometheus, the OpenTelemetry Collector, and Loki and Promtail where a user installed them),
# checks formatting, lints, validates the shipped configs, and runs every
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
# The tests and benchmarks find the stack by this, not by the path they were compiled at (a
# target directory shared between clones can hold binaries built at another clone's path).
export ALERTPIPE_STACK_ENV=${ALERTPIPE_STATE:-$REPO/.state}/stack.env

step "config checks"
amtool check-config config/alertmanager/alertmanager.yml
promtool check config config/prometheus/prometheus.yml
LOKI_NOTE="not run: N tests need Loki/Promtail/logcli, not installed (README: Loki and Promtail)"
if [ "${STACK_HAVE_LOKI:-0}" = 1 ]; then
  for f in config/loki/loki.yml config/loki/loki-distributed.yml; do
    "$STACK_LOKI_BIN" -config.file="$f" -config.expand-env=true -verify-config -log.level=warn
  done
else
  echo "not run: loki -verify-config (Loki not installed); check_deploy.py still checks the Loki files' schema"
fi
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
# A failing test shows its message, not a 40-frame backtrace that pushes the message out of a
# CI log's tail (RUST_BACKTRACE_TESTS=1 bash deploy/local/test.sh to have them).
export RUST_BACKTRACE=${RUST_BACKTRACE_TESTS:-0}
# Integration tests mostly wait on peers: run more of them at once than there are cores.
if [ "${STACK_HAVE_LOKI:-0}" = 1 ]; then
  cargo test --locked --lib --bins --tests -- --test-threads "${TEST_THREADS:-8}"
else
  # The tests under tests/it/needs_loki/ need programs this machine lacks: counted, not run.
  not_run=$(cargo test --locked --test it -- --list needs_loki:: 2>/dev/null | grep -c ': test$' || true)
  cargo test --locked --lib --bins --tests -- --test-threads "${TEST_THREADS:-8}" --skip needs_loki::
  NOT_RUN="${LOKI_NOTE/N/$not_run}"
  echo
  echo "$NOT_RUN"
fi

step "benchmarks, once each with their smallest settings (a smoke run, not a measurement)"
bash benches/smoke.sh
if [ -n "${NOT_RUN:-}" ]; then echo; echo "$NOT_RUN"; fi
