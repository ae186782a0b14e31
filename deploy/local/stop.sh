#!/usr/bin/env bash
# `make stop`: stops the services `make run` started (if its terminal was lost) with
# SIGTERM, so they drain. PostgreSQL and RabbitMQ keep running; `make reset` wipes data.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
ROOT=$(cd ../.. && pwd)

stopped=0
for name in read-api replicator write-api; do
  for pid in $(pgrep -f "^$ROOT/target/release/$name( |$)" || true); do
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    stopped=1
  done
done
pkill -TERM -f "$ROOT/deploy/local/run.sh" 2>/dev/null || true
[ "$stopped" = 1 ] || log "nothing of the stack was running"
