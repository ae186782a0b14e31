#!/usr/bin/env bash
# `make bench` / `make bench-quick`: measures the stack against PostgreSQL itself.
#
# Brings up PostgreSQL's replica clusters (5433/5434) as `make run` does, and the benchmark's
# own primary cluster `bench-primary` on 5435, created once with `wal_level = logical` so that
# PostgreSQL's logical replication can be measured beside the product on the same primary (the
# machine's own cluster on 5432 keeps its settings; the benchmark starts this one when stopped
# and stops it again at the end). The broker is a RabbitMQ node of the benchmark's own
# (`rmqbench1@localhost`, AMQP on 5691, run by rabbitmq-cluster.sh beside the machine's node,
# which the tests share) with the settings docs/operations.md recommends; it starts empty on
# every run and is stopped at the end. Then it gives the benchmark its own, empty places: a
# database `bench` on each of the three clusters (owned by the catalogue role), dropped and
# made anew on every run so that runs are comparable, and a vhost `bench` on that node. For the
# logical-replication baselines a login `bench_lr` (superuser on these three clusters:
# PostgreSQL before 16 lets only superusers create subscriptions) gets a fresh random password
# for the run and loses its login at the end. The `products` databases and the machine's
# broker are left alone. It builds in release mode, starts write-api (8000), read-api (8001)
# and the replicator (8002) on them, runs the `bench` tool (which stops and restarts the
# replicator for its catch-up figure) and stops the services at the end, also on Ctrl-C. The
# `bench` databases and the broker node's data (/var/tmp/catalogue-rmq-bench) stay until the
# next run, for a look afterwards.
#
# Arguments go to the tool: `deploy/local/bench.sh --quick`, `… --duration 10`, `… --help`.
# The report, JSON and PNG land in bench/results/; the services' logs in bench/results/logs/.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
ROOT=$(cd ../.. && pwd)

BENCH_DB=bench
BENCH_VHOST=bench
PORTS=(8000 8001 8002)

for port in "${PORTS[@]}"; do
  if port_open "$port"; then
    die "port $port is taken (is \`make run\` running?): the benchmark starts write-api, read-api and the replicator on 8000-8002 itself; stop whatever listens there first"
  fi
done

./ensure-services.sh
./provision.sh

PRIMARY_PORT=5435
PORTS_PG=("$PRIMARY_PORT" 5433 5434)
primary_was_running=0
port_open "$PRIMARY_PORT" && primary_was_running=1
ensure_cluster bench-primary "$PRIMARY_PORT" -o wal_level=logical
level=$(as_postgres psql -qtAX -p "$PRIMARY_PORT" -c 'SHOW wal_level')
[ "$level" = logical ] || die "cluster bench-primary (port $PRIMARY_PORT) runs with wal_level = $level, not logical: drop it (pg_dropcluster --stop $(pg_version) bench-primary) and run again"

log "building the services and the benchmark tool (release)"
(cd "$ROOT" && cargo build --release --locked -p write-api -p replicator -p read-api -p bench)

# Subscriptions and slots a killed logical-replication baseline may have left; they would
# stop DROP DATABASE.
drop_logical_leftovers() {
  local port
  for port in 5433 5434; do
    as_postgres psql -q -p "$port" -d "$BENCH_DB" -v ON_ERROR_STOP=1 <<'SQL' 2>/dev/null || true
SELECT format('ALTER SUBSCRIPTION %I DISABLE', subname), format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', subname),
       format('DROP SUBSCRIPTION %I', subname)
FROM pg_subscription WHERE subname LIKE 'bench\_lr\_%' \gexec
SQL
  done
  as_postgres psql -q -p "$PRIMARY_PORT" -v ON_ERROR_STOP=1 <<SQL >/dev/null
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
WHERE database = '$BENCH_DB' AND slot_name LIKE 'bench\_lr\_%' AND NOT active;
SQL
}

recreate_database() {
  local port=$1
  as_postgres psql -q -p "$port" -v ON_ERROR_STOP=1 -v db="$BENCH_DB" -v owner="$CATALOGUE_DB_USER" <<'SQL'
SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', :'db') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner') \gexec
SQL
}

# The benchmark's broker: one node beside the machine's, whose write-ahead log and statistics
# the tests share and a run would otherwise inherit. Its quorum-queue write-ahead log rolls
# over at 16 MB instead of 512 (a roll-over of the default log stalls every queue for
# seconds: docs/operations.md), and it runs no management plugin, so it collects no
# per-message statistics. Its data is removed when the next run starts. BROKER_WAL_BYTES in
# the environment sets another log size (the report's first line says which).
BROKER_PORT=5691
: "${BROKER_WAL_BYTES:=16777216}"
BROKER_DESCRIPTION="RabbitMQ node of its own (quorum-queue log $((BROKER_WAL_BYTES / 1048576)) MB, no management plugin)"
bench_broker() {
  CATALOGUE_RMQ_CLUSTER_DIR=/var/tmp/catalogue-rmq-bench CATALOGUE_RMQ_NODE_PREFIX=rmqbench \
    CATALOGUE_RMQ_SIZE=1 CATALOGUE_RMQ_PORT_BASE=$((BROKER_PORT - 1)) \
    CATALOGUE_RMQ_CONF="raft.wal_max_size_bytes = $BROKER_WAL_BYTES" ./rabbitmq-cluster.sh "$@"
}

# The logical-replication baselines' login, with a password only this run knows.
LR_USER=bench_lr
LR_PASSWORD=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
set_lr_login() {
  local port
  for port in "${PORTS_PG[@]}"; do
    as_postgres psql -q -p "$port" -v ON_ERROR_STOP=1 -v user="$LR_USER" -v password="$1" <<'SQL'
SELECT format('CREATE ROLE %I', :'user') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SELECT CASE WHEN :'password' = '' THEN format('ALTER ROLE %I NOLOGIN PASSWORD NULL', :'user')
            ELSE format('ALTER ROLE %I LOGIN SUPERUSER PASSWORD %L', :'user', :'password') END \gexec
SQL
  done
}

log "making a fresh database $BENCH_DB on ports ${PORTS_PG[*]} and an empty broker node on $BROKER_PORT"
drop_logical_leftovers
for port in "${PORTS_PG[@]}"; do recreate_database "$port"; done
bench_broker down
bench_broker up
bench_broker ctl add_vhost "$BENCH_VHOST" >/dev/null
bench_broker ctl set_permissions -p "$BENCH_VHOST" guest '.*' '.*' '.*' >/dev/null

db_url() { echo "postgres://$CATALOGUE_DB_USER:$CATALOGUE_DB_PASSWORD@127.0.0.1:$1/$BENCH_DB"; }
export DATABASE_URL REPLICA_1_URL REPLICA_2_URL RABBITMQ_URL
DATABASE_URL=$(db_url "$PRIMARY_PORT")
REPLICA_1_URL=$(db_url 5433)
REPLICA_2_URL=$(db_url 5434)
RABBITMQ_URL="amqp://guest:guest@127.0.0.1:$BROKER_PORT/$BENCH_VHOST"
export BENCH_BROKER=$BROKER_DESCRIPTION
# Settings that would change what is measured: writes open, the two replicas above, no
# configuration file.
unset REPLICA_URLS WRITE_API_TOKEN CONFIG_FILE PORT

log "applying migrations to the primary's $BENCH_DB database"
"$ROOT/target/release/write-api" migrate

RESULTS="$ROOT/bench/results"
LOGS="$RESULTS/logs"
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/catalogue-bench.XXXXXX")
mkdir -p "$LOGS"

# Stops every service whose pid file names a live process (the tool rewrites the
# replicator's when it restarts it), one SIGTERM each, then waits for them.
stop_all() {
  local file pid pids=()
  trap - INT TERM EXIT
  if [ -e "$RUN_DIR/bench.pid" ]; then
    kill -TERM "$(cat "$RUN_DIR/bench.pid")" 2>/dev/null || true
  fi
  for file in "$RUN_DIR"/*.pid; do
    [ -e "$file" ] || continue
    pid=$(cat "$file")
    if kill -TERM "$pid" 2>/dev/null; then pids+=("$pid"); fi
  done
  if [ ${#pids[@]} -gt 0 ]; then
    log "stopping the services"
    for _ in $(seq 150); do
      local alive=0
      for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*[ZX]' "/proc/$pid/status" 2>/dev/null; then alive=1; fi
      done
      [ "$alive" -eq 0 ] && break
      sleep 0.2
    done
  fi
  ./pgpool-baseline.sh stop "$RUN_DIR/pgpool"
  wait 2>/dev/null || true
  drop_logical_leftovers || true
  set_lr_login '' || true
  bench_broker stop 1 || true
  if [ "$primary_was_running" -eq 0 ]; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" bench-primary stop || true
  fi
  rm -rf "$RUN_DIR"
}
trap 'stop_all; exit 130' INT TERM
trap stop_all EXIT

# Each service gets its own session, so a Ctrl-C reaches only this script, which then stops
# them with one SIGTERM each.
for service in write-api:8000 replicator:8002 read-api:8001; do
  name=${service%%:*} port=${service##*:}
  PORT=$port setsid "$ROOT/target/release/$name" >"$LOGS/$name.log" 2>&1 &
  echo $! >"$RUN_DIR/$name.pid"
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
    kill -0 "$!" 2>/dev/null || die "$name exited; see $LOGS/$name.log"
    sleep 0.2
  done
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || die "$name is not ready after 60 s; see $LOGS/$name.log"
  log "$name is ready on http://127.0.0.1:$port (log: $LOGS/$name.log)"
done

# pgpool-II over both replicas, for the read baseline; the benchmark goes on without it (and
# says so in the report) where it cannot be installed or started.
if pgpool_port=$(./pgpool-baseline.sh start "$RUN_DIR/pgpool"); then
  export BENCH_PGPOOL_URL
  BENCH_PGPOOL_URL="postgres://$CATALOGUE_DB_USER:$CATALOGUE_DB_PASSWORD@127.0.0.1:$pgpool_port/$BENCH_DB"
  log "pgpool-II balances the read baseline over both replicas on port $pgpool_port"
else
  log "pgpool-II did not start: its read baseline is left out"
fi

set_lr_login "$LR_PASSWORD"
export BENCH_LR_SUBSCRIBER_URLS BENCH_LR_PUBLISHER_CONNINFO
BENCH_LR_SUBSCRIBER_URLS="postgres://$LR_USER:$LR_PASSWORD@127.0.0.1:5433/$BENCH_DB,postgres://$LR_USER:$LR_PASSWORD@127.0.0.1:5434/$BENCH_DB"
BENCH_LR_PUBLISHER_CONNINFO="host=127.0.0.1 port=$PRIMARY_PORT dbname=$BENCH_DB user=$LR_USER password=$LR_PASSWORD"

log "running the benchmark"
# In the background and waited for, so that a signal to this script is handled at once (the
# trap stops the tool too).
(cd "$ROOT" && exec "$ROOT/target/release/bench" --pid-dir "$RUN_DIR" \
  --replicator-bin "$ROOT/target/release/replicator" \
  --read-api-bin "$ROOT/target/release/read-api" \
  --replicator-log "$LOGS/replicator-restarted.log" \
  --out-dir "$RESULTS" "$@") &
echo $! >"$RUN_DIR/bench.pid"
wait $!
