#!/usr/bin/env bash
# What one fetch costs the stack's broker (tansu 0.6, sqlite engine) as a consumer's lag grows.
# The broker answers a fetch with one SQL query per partition (tansu-storage's
# `src/sql/record_fetch.sql`), which sums the bytes of every record from the fetch offset to
# the end of the partition before it keeps the first fetch.max.bytes of them; its one storage
# task serves every produce, fetch and commit in turn, so a produce waits that long too.
# This fills a fresh topic with the load generator's bare producer, then runs that same query,
# read from the crate's source this machine built tansu from, on the broker's database
# (read-only, beside the running broker) for a 1 MiB and a 2 MiB fetch at several lags.
#   bash benches/broker_fetch_cost.sh        (LOAD_S=15: seconds of produce, ~15-20k records/s)
# Prints, per lag: records behind the end, milliseconds per query (median of RUNS=5), µs per
# record of lag. Exits non-zero when the query, the database or sqlite3 is missing.
set -euo pipefail
LOAD_S=${LOAD_S:-15}; RUNS=${RUNS:-5}
# shellcheck source=benches/common/prologue.sh
. "$(dirname "${BASH_SOURCE[0]}")/common/prologue.sh"
command -v sqlite3 >/dev/null || { echo "needs sqlite3: apt-get install -y sqlite3" >&2; exit 1; }
sql=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/tansu-storage-0.6.0/src/sql/record_fetch.sql 2>/dev/null | head -1)
[ -n "$sql" ] || { echo "tansu-storage 0.6.0's source is not in the cargo registry (deploy/local/stack.sh up builds tansu from it)" >&2; exit 1; }
[ -f "$broker_db" ] || { echo "no broker database at $broker_db" >&2; exit 1; }
topic=bench_fetch_cost_$(date +%s)
echo "== filling $topic for ${LOAD_S}s with the bare producer"
ALERTPIPE__KAFKA__BROKERS=$STACK_KAFKA_BROKERS "$BIN" loadgen --target http://127.0.0.1:9 \
  --mode baseline --runs 1 --duration-s "$LOAD_S" --baseline-topic "$topic" | grep -E '^run|alerts/s' | head -2
sleep 2 # the last produces reach the database

q() { sqlite3 -readonly "$broker_db" "$@"; }
cluster=$(q "select name from cluster limit 1")
# Partition 0's last offset + 1: the high watermark the broker bounds the query with.
hw=$(q "select max(r.offset_id) + 1 from record r join topition tp on r.topition = tp.id
        join topic t on tp.topic = t.id where t.name = '$topic' and tp.partition = 0")
[ -n "$hw" ] || { echo "no records in $topic partition 0" >&2; exit 1; }
echo "partition 0 holds $hw records"
# The crate's query, its numbered parameters bound by sqlite3 (`$1` is a valid sqlite name).
body=$(sed '/^--/d' "$sql" | tr -d ';')
printf '%-8s  %12s  %10s  %12s\n' fetch lag "ms/query" "µs/record"
for max in 1048576 2097152; do
  for div in 1 3 10 100; do
    lag=$((hw / div)); offset=$((hw - lag))
    times=()
    for _ in $(seq 1 "$RUNS"); do
      t=$(q <<EOF | sed -n 's/^Run Time: real \([0-9.]*\).*/\1/p' | tail -1
.parameter init
.parameter set \$1 '$cluster'
.parameter set \$2 '$topic'
.parameter set \$3 0
.parameter set \$4 $offset
.parameter set \$5 $max
.parameter set \$6 $hw
.timer on
select count(*), sum(length(v)) from ($body);
EOF
)
      times+=("$t")
    done
    med=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((RUNS + 1) / 2))p")
    awk -v m="$max" -v l="$lag" -v t="$med" \
      'BEGIN { printf "%-8s  %12d  %10.1f  %12.2f\n", m / 1048576 " MiB", l, t * 1000, (l > 0 ? t * 1e6 / l : 0) }'
  done
done
