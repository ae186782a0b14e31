#!/usr/bin/env bash
# Makes sure PostgreSQL (127.0.0.1:5432) and RabbitMQ (127.0.0.1:5672, management API on
# 15672) run on this machine: installs them from Debian's packages when missing, starts them
# when stopped, and creates the login role the stack and the tests use. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

install_missing_packages() {
  local packages=()
  [ -n "$(pg_version)" ] || packages+=(postgresql postgresql-contrib)
  command -v rabbitmq-server >/dev/null || packages+=(rabbitmq-server)
  command -v curl >/dev/null || packages+=(curl)
  if [ ${#packages[@]} -gt 0 ]; then
    log "installing ${packages[*]} from Debian's packages"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"
  fi
}

start_postgres() {
  if port_open 5432; then return; fi
  log "starting PostgreSQL"
  if has_systemd; then
    as_root systemctl start postgresql
  else
    as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main start
  fi
  wait_for_port 5432
}

start_rabbitmq() {
  if ! port_open 5672; then
    log "starting RabbitMQ"
    if has_systemd; then
      as_root systemctl start rabbitmq-server
    else
      as_root rabbitmq-server -detached
    fi
    wait_for_port 5672 120
  fi
  if ! port_open 15672; then
    log "enabling the RabbitMQ management API (port 15672)"
    as_root rabbitmq-plugins enable rabbitmq_management >/dev/null
    wait_for_port 15672 60
  fi
}

# A password login for the services and the tests: it works whatever pg_hba.conf says
# (peer, scram or trust).
create_database_role() {
  as_postgres psql -q -v ON_ERROR_STOP=1 -v user="$CATALOGUE_DB_USER" -v password="$CATALOGUE_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'user', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SQL
}

install_missing_packages
start_postgres
start_rabbitmq
create_database_role
log "PostgreSQL and RabbitMQ are up"
