#!/usr/bin/env bash
# seat-agent against an independent SCIM server, stock scim2-server 0.8.3 (python-scim), with the
# same client and the same operations: bench/scim_load.py --url against each server in turn,
# A B A B (scim2-server, seat-agent, scim2-server, seat-agent), each server fresh, seeded with
# the same users over HTTP, then measured at concurrency 1 and 4; bench/peers_report.py prints
# the ratios seat-agent / scim2-server of the runs made close together.
#
# From the repository root, with seat-agent and scim2-server installed in the active
# environment (scripts/test installs both into .venv):
#   PATH=$PWD/.venv/bin:$PATH bench/peers.sh [--db sqlite|postgres] [--quick]
#       [--users N] [--requests N] [--page-requests N] [--ops LIST] [--concurrency LIST]
#       [--out DIR]
# --ops and --concurrency are scim_load.py's (default create,lookup,page,patch,put,delete and
# 1,4); --ops create,patch,put,delete is a write-only comparison.
# --quick: 1,000 users, 100 requests per operation, 20 pages: a smoke run of about a minute.
# Default: 10,000 users, 1,000 requests per operation, 100 pages (scim2-server takes about
# 0.15 s a page); 10 minutes on SQLite, 20 on PostgreSQL, on 2 loaded cores. Each run's output
# and JSON go to DIR (default bench/results/peers-<db>-<UTC time>/, not tracked).
set -euo pipefail
cd "$(dirname "$0")/.."

db=sqlite
users=10000
requests=1000
pages=100
ops=create,lookup,page,patch,put,delete
levels=1,4
pg=postgresql://postgres@127.0.0.1:5432/test
out=
usage() {
  echo "usage: bench/peers.sh [--db sqlite|postgres] [--quick] [--users N] [--requests N]" \
    "[--page-requests N] [--ops LIST] [--concurrency LIST] [--out DIR]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case $1 in
    --db) db=${2:?}; shift 2 ;;
    --quick) users=1000; requests=100; pages=20; shift ;;
    --users) users=${2:?}; shift 2 ;;
    --requests) requests=${2:?}; shift 2 ;;
    --page-requests) pages=${2:?}; shift 2 ;;
    --ops) ops=${2:?}; shift 2 ;;
    --concurrency) levels=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
case $db in sqlite|postgres) ;; *) usage ;; esac
out=${out:-bench/results/peers-$db-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
work=$(mktemp -d -t seat-peers-XXXXXX)
token=peers-bench-token
server_pid=
schema=

report_failure() {  # scim_load.py's exit status: 1 some requests failed, 2 out of time
  if [ "$1" = 1 ]; then
    echo "== $2: some requests failed (the errors column)"
  else
    echo "== $2: bench/scim_load.py stopped (exit $1); this run has no figures" >&2
  fi
}

free_port() {
  python -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_do() {
  python -c 'import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as c: c.execute(sys.argv[2])' "$pg" "$1"
}

stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM -- "-$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
  if [ -n "$schema" ]; then
    pg_do "DROP SCHEMA IF EXISTS $schema CASCADE"
    schema=
  fi
}
trap 'stop_server; rm -rf "$work"' EXIT

wait_ready() {  # URL: up to 60 s for GET ServiceProviderConfig to answer 200
  for _ in $(seq 300); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "the server exited:" >&2
      tail -20 "$log" >&2
      exit 1
    fi
    if curl -sf -o /dev/null -H "Authorization: Bearer $token" "$1/ServiceProviderConfig"; then
      return
    fi
    sleep 0.2
  done
  echo "the server did not answer within 60 s" >&2
  exit 1
}

start_scim2_server() {  # in-memory; one tenant, /bench/v2
  port=$(free_port)
  log=$work/scim2-server.log
  setsid scim2-server --hostname 127.0.0.1 --port "$port" --bearer-token "$token" \
    --tenant bench >"$log" 2>&1 &
  server_pid=$!
  url=http://127.0.0.1:$port/bench/v2
  wait_ready "$url"
}

start_seat_agent() {  # seat-agent serve, default workers and threads, a fresh database
  port=$(free_port)
  log=$work/seat-agent.log
  if [ "$db" = postgres ]; then
    schema=peers_$(python -c 'import uuid; print(uuid.uuid4().hex[:10])')
    pg_do "CREATE SCHEMA $schema"
    db_url="$pg?options=-csearch_path%3D$schema"
  else
    rm -f "$work"/peers.db*
    db_url=sqlite:///$work/peers.db
  fi
  cat >"$work/seat-agent.toml" <<EOF
[database]
url = "$db_url"
[auth]
scim_token = "$token"
[license]
seats = $((users + 20 * requests + 1000))
on_full = "refuse"
[scim]
max_page_size = 1000
EOF
  setsid seat-agent serve --config "$work/seat-agent.toml" --host 127.0.0.1 --port "$port" \
    >"$log" 2>&1 &
  server_pid=$!
  url=http://127.0.0.1:$port/scim/v2
  wait_ready "$url"
}

echo "peers: seat-agent ($db) and scim2-server $(python -c \
  'import importlib.metadata as m; print(m.version("scim2-server"))'), $users users," \
  "$requests requests per operation, $pages pages, concurrency $levels, ops $ops; output in $out"
for round in 1 2; do
  for target in scim2-server seat-agent; do
    if [ "$target" = scim2-server ]; then start_scim2_server; else start_seat_agent; fi
    echo "== round $round: $target at $url (pid $server_pid)"
    python bench/scim_load.py --url "$url" --token "$token" --server-pid "$server_pid" \
      --label "$target" --users "$users" --requests "$requests" --page-requests "$pages" \
      --ops "$ops" --concurrency "$levels" --json "$out/$round-$target.json" 2>&1 \
      | tee "$out/$round-$target.log" || report_failure "${PIPESTATUS[0]}" "$target"
    stop_server
  done
done
python bench/peers_report.py --json "$out/ratios.json" "$out"/[0-9]-*.json | tee "$out/ratios.md"
