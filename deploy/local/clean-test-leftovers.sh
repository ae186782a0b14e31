#!/usr/bin/env bash
# Drops databases and RabbitMQ vhosts named test_* that a killed test run left behind (on the
# machine's broker and on the local RabbitMQ cluster, if it runs). Do not run it while tests
# are running.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

admin_url=${TEST_PG_ADMIN_URL:-postgres://$CATALOGUE_DB_USER:$CATALOGUE_DB_PASSWORD@127.0.0.1:5432/postgres}
psql "$admin_url" -Atq -c "SELECT datname FROM pg_database WHERE datname LIKE 'test\_%'" |
  while read -r db; do
    psql "$admin_url" -q -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
  done

curl -fsS -u guest:guest "$RABBITMQ_API/api/vhosts?columns=name" |
  { grep -o '"name":"test_[^"]*"' || true; } | cut -d'"' -f4 |
  while read -r vhost; do
    curl -fsS -u guest:guest -X DELETE "$RABBITMQ_API/api/vhosts/$vhost" >/dev/null || true
  done

# The same on the local three-node cluster (rabbitmq-cluster.sh), when one of its nodes runs.
if ./rabbitmq-cluster.sh status | grep running >/dev/null; then
  ./rabbitmq-cluster.sh ctl list_vhosts --quiet --no-table-headers |
    { grep '^test_' || true; } |
    while read -r vhost; do
      ./rabbitmq-cluster.sh ctl delete_vhost "$vhost" </dev/null >/dev/null || true
    done
fi

# PostgreSQL clusters the failover tests made (test-support's PgCluster), with their servers.
for root in "${TMPDIR:-/tmp}"/pgcluster_*; do
  [ -d "$root" ] || continue
  if [ -f "$root/data/postmaster.pid" ]; then
    bin=${TEST_PG_BIN:-/usr/lib/postgresql/$(pg_version)/bin}
    if [ "$(id -u)" -eq 0 ]; then
      runuser -u postgres -- "$bin/pg_ctl" stop -m immediate -D "$root/data" >/dev/null || true
    else
      "$bin/pg_ctl" stop -m immediate -D "$root/data" >/dev/null || true
    fi
  fi
  rm -rf "$root"
done
