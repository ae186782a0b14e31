#!/usr/bin/env bash
# Creates what the local stack needs inside the running services: the `products` database
# owned by the catalogue role, and the RabbitMQ user and vhost. Safe to run again; keeps data.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

create_database() {
  local port=$1 name=$2
  as_postgres psql -q -p "$port" -v ON_ERROR_STOP=1 -v db="$name" -v owner="$CATALOGUE_DB_USER" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
}

# The management API is reachable only from localhost with guest, which is all we need here.
rabbitmq_api() {
  local method=$1 path=$2 body=${3:-}
  curl -fsS -u guest:guest -X "$method" -H 'content-type: application/json' \
    ${body:+--data "$body"} "$RABBITMQ_API/api/$path" >/dev/null
}

create_rabbitmq_user_and_vhost() {
  rabbitmq_api PUT "users/$CATALOGUE_AMQP_USER" \
    "{\"password\":\"$CATALOGUE_AMQP_PASSWORD\",\"tags\":\"management\"}"
  rabbitmq_api PUT "vhosts/$CATALOGUE_AMQP_VHOST"
  rabbitmq_api PUT "permissions/$CATALOGUE_AMQP_VHOST/$CATALOGUE_AMQP_USER" \
    '{"configure":".*","write":".*","read":".*"}'
}

log "creating database products (owner $CATALOGUE_DB_USER) and RabbitMQ vhost $CATALOGUE_AMQP_VHOST"
create_database 5432 products
create_rabbitmq_user_and_vhost
