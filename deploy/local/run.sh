#!/usr/bin/env bash
# `make run`: brings up everything the stack needs on this machine, builds it in release
# mode and runs the services in the foreground until Ctrl-C. Safe to run again; keeps data.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
ROOT=$(cd ../.. && pwd)

./ensure-services.sh
./provision.sh

log "building the three services (release)"
(cd "$ROOT" && cargo build --release --locked -p write-api -p replicator -p read-api)

export DATABASE_URL=${DATABASE_URL:-postgres://$CATALOGUE_DB_USER:$CATALOGUE_DB_PASSWORD@127.0.0.1:5432/products}
export RABBITMQ_URL=${RABBITMQ_URL:-amqp://$CATALOGUE_AMQP_USER:$CATALOGUE_AMQP_PASSWORD@127.0.0.1:5672/$CATALOGUE_AMQP_VHOST}

log "applying migrations to the primary"
"$ROOT/target/release/write-api" migrate

export REPLICA_1_URL=${REPLICA_1_URL:-postgres://$CATALOGUE_DB_USER:$CATALOGUE_DB_PASSWORD@127.0.0.1:5433/products}
export REPLICA_2_URL=${REPLICA_2_URL:-postgres://$CATALOGUE_DB_USER:$CATALOGUE_DB_PASSWORD@127.0.0.1:5434/products}

# name:port of each service, in start order.
SERVICES=(write-api:8000 replicator:8002)
[ -x "$ROOT/target/release/read-api" ] && SERVICES+=(read-api:8001)

for service in "${SERVICES[@]}"; do
  port=${service##*:}
  port_open "$port" && die "port $port is taken: is the stack already running? (\`make stop\` stops it)"
done

pids=()
stop_all() {
  trap - INT TERM
  log "stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait
  exit 0
}
trap stop_all INT TERM

# Each service gets its own session, so a Ctrl-C reaches only this script, which then stops
# them with one SIGTERM each (a second signal would make a service skip its drain).
for service in "${SERVICES[@]}"; do
  name=${service%%:*} port=${service##*:}
  if [ "$name" = read-api ]; then
    # read-api logs in as the role that can only SELECT (its default URLs).
    env -u DATABASE_URL -u REPLICA_1_URL -u REPLICA_2_URL PORT="$port" setsid "$ROOT/target/release/$name" &
  else
    PORT=$port setsid "$ROOT/target/release/$name" &
  fi
  pids+=($!)
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
    kill -0 "${pids[-1]}" 2>/dev/null || { kill -TERM "${pids[@]}" 2>/dev/null; die "$name exited; see its log above"; }
    sleep 0.2
  done
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { kill -TERM "${pids[@]}"; die "$name is not ready after 60 s"; }
  log "$name is ready on http://127.0.0.1:$port"
done

log "the stack is up — try:"
cat >&2 <<'TRY'
  curl -s -X POST http://127.0.0.1:8000/api/products \
       -H 'content-type: application/json' -d '{"name":"Laptop","price":999.99,"stock":10}'
  curl -s http://127.0.0.1:8002/readyz
  curl -s http://127.0.0.1:8001/api/products
TRY
log "Ctrl-C stops it"
wait
