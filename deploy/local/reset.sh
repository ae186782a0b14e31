#!/usr/bin/env bash
# `make reset`: after asking, stops the stack and wipes its local data: the `products`
# databases on ports 5432-5434 and the RabbitMQ vhost. The PostgreSQL clusters themselves
# and other databases are left alone. `--yes` skips the question.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

if [ "${1:-}" != --yes ]; then
  read -r -p "Delete the products databases (ports 5432, 5433, 5434) and RabbitMQ vhost '$CATALOGUE_AMQP_VHOST'? [y/N] " answer
  [[ "$answer" =~ ^[Yy] ]] || { log "nothing deleted"; exit 0; }
fi
./stop.sh
for port in 5432 5433 5434; do
  if port_open "$port"; then
    log "dropping database products on port $port"
    as_postgres psql -q -p "$port" -c "DROP DATABASE IF EXISTS products WITH (FORCE)"
  fi
done
log "deleting RabbitMQ vhost $CATALOGUE_AMQP_VHOST"
curl -fsS -u guest:guest -X DELETE "$RABBITMQ_API/api/vhosts/$CATALOGUE_AMQP_VHOST" >/dev/null || true
log "done; \`make run\` starts from scratch"
