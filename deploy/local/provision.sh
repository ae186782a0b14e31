#!/usr/bin/env bash
# Creates what the local stack needs: two replica clusters (ports 5433 and 5434, data in
# PostgreSQL's usual place, /var/lib/postgresql/<version>/replica-N), the `products` database
# on the primary and on each replica, owned by the catalogue role, and the RabbitMQ user and
# vhost. Safe to run again; keeps data.
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

# read-api's login: it may read every table the catalogue role creates, and nothing else.
grant_reader() {
  local port=$1
  as_postgres psql -q -p "$port" -d products -v ON_ERROR_STOP=1 \
    -v reader="$CATALOGUE_READER_USER" -v password="$CATALOGUE_READER_PASSWORD" -v owner="$CATALOGUE_DB_USER" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'reader', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader') \gexec
SELECT format('GRANT CONNECT ON DATABASE products TO %I', :'reader') \gexec
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'reader') \gexec
SELECT format('GRANT SELECT ON ALL TABLES IN SCHEMA public TO %I', :'reader') \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT SELECT ON TABLES TO %I', :'owner', :'reader') \gexec
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

ensure_cluster replica-1 5433
ensure_cluster replica-2 5434

log "creating database products (owner $CATALOGUE_DB_USER) and RabbitMQ vhost $CATALOGUE_AMQP_VHOST"
for port in 5432 5433 5434; do
  create_database "$port" products
  grant_reader "$port"
done
create_rabbitmq_user_and_vhost
