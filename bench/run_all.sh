#!/usr/bin/env bash
# Every figure in docs/performance.md, one run after the other (about an hour on 2 cores).
# Run it on an otherwise idle machine from the repository root, with seat-agent installed in
# the active environment (scripts/test installs it into .venv):
#   PATH=$PWD/.venv/bin:$PATH bench/run_all.sh [output-dir]
# Each run's full output goes to output-dir/<name>.log (default bench/results/, not tracked).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results}
mkdir -p "$out"
run() {
  local name=$1
  shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$out/$name.log"
}

# SCIM latency: one request at a time (the p50/p99 targets), 10,000 and 100,000 users.
for db in sqlite postgres; do
  for n in 10000 100000; do
    members=$((n < 50000 ? n : 50000))
    run "scim-$db-$n-c1" python bench/scim_load.py --db "$db" --users "$n" \
      --group-members "$members" --seed bulk --concurrency 1 --requests 1000
  done
done
# The read targets again, six rounds each at 100,000 users, with the host probe per round;
# then through requests instead of the lean client (what the client's own Python adds).
for db in sqlite postgres; do
  for http in lean requests; do
    run "scim-$db-100000-reads-$http" python bench/scim_load.py --db "$db" --users 100000 \
      --seed bulk --concurrency 1 --requests 1000 --read-rounds 6 --http-client "$http"
  done
done
# SCIM throughput: two concurrent clients, two worker layouts (threads of a worker share a GIL).
for db in sqlite postgres; do
  for layout in "2 4" "4 1"; do
    set -- $layout
    run "scim-$db-100000-c2-w$1t$2" python bench/scim_load.py --db "$db" --users 100000 \
      --group-members 50000 --seed bulk --concurrency 2 --workers "$1" --threads "$2"
  done
done
# Group PATCH cost against group size, in process: batches of 100, then one member at a time.
for db in sqlite postgres; do
  run "group-batches-$db" python bench/group_batches.py --db "$db" --members 100000
done
run "group-single-sqlite" python bench/group_batches.py --db sqlite --members 100000 --batch 1
run "group-single-postgres" python bench/group_batches.py --db postgres --members 50000 --batch 1
# The seat decision's cost on the SCIM create path.
for db in sqlite postgres; do
  run "seat-decision-$db" python bench/seat_decision.py --db "$db" --users 5000
done
# Reconcile time and peak memory.
for db in sqlite postgres; do
  for n in 10000 100000; do
    run "reconcile-$db-$n" python bench/reconcile.py --db "$db" --users "$n"
  done
done
# A normal client's lookups with and without 200 slow-header sockets, on the buffering worker
# and on gunicorn's gthread worker (the serving model before it).
for worker in buffering gthread; do
  run "slow-clients-$worker" python bench/slow_clients.py --worker "$worker"
done
# The status page's seats-per-day read at 1,000,000 ledger entries.
for db in sqlite postgres; do
  run "status-history-$db" python bench/status_history.py --db "$db" --entries 1000000
done
# seat-agent against stock scim2-server 0.8.3, A B A B, at concurrency 1 and 4 (10,000 users).
for db in sqlite postgres; do
  run "peers-$db" bench/peers.sh --db "$db" --out "$out/peers-$db"
done
