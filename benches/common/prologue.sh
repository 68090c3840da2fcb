# Sourced by the benchmark scripts: the local stack up and its env exported, alertpipe built
# in release; sets REPO (and cds there) and BIN.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
bash deploy/local/stack.sh up
set -a; . "${ALERTPIPE_STATE:-$REPO/.state}/stack.env"; set +a
cargo build --quiet --release --locked
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/alertpipe
