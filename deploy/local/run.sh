#!/usr/bin/env bash
# `make run`: brings up everything the stack needs on this machine, builds it in release
# mode and runs the services in the foreground until Ctrl-C. Safe to run again; keeps data.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
ROOT=$(cd ../.. && pwd)

./ensure-services.sh
./provision.sh

log "building the workspace (release)"
(cd "$ROOT" && cargo build --release --locked --bins)

export DATABASE_URL=${DATABASE_URL:-postgres://$CATALOGUE_DB_USER:$CATALOGUE_DB_PASSWORD@127.0.0.1:5432/products}
export RABBITMQ_URL=${RABBITMQ_URL:-amqp://$CATALOGUE_AMQP_USER:$CATALOGUE_AMQP_PASSWORD@127.0.0.1:5672/$CATALOGUE_AMQP_VHOST}

log "applying migrations to the primary"
"$ROOT/target/release/write-api" migrate

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
setsid "$ROOT/target/release/write-api" &
pids+=($!)

for port in 8000; do
  for _ in $(seq 150); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
    kill -0 "${pids[0]}" 2>/dev/null || die "write-api exited; see its log above"
    sleep 0.2
  done
done
log "write-api is ready on http://127.0.0.1:8000 — try:"
cat >&2 <<'TRY'
  curl -s -X POST http://127.0.0.1:8000/api/products \
       -H 'content-type: application/json' -d '{"name":"Laptop","price":999.99,"stock":10}'
TRY
log "Ctrl-C stops it"
wait
