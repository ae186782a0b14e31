#!/usr/bin/env bash
# Entry point of the stand-in postgres image (stand-in-images.sh builds it where no image
# registry answers). It does the part of the official image's entry point that this project
# uses, with the same variables and paths:
#
#   docker-entrypoint.sh postgres [ARGS...]    (the image's default command)
#   docker-entrypoint.sh OTHER COMMAND...      runs that command as it is
#
# On an empty $PGDATA (default /var/lib/postgresql/data): initdb with POSTGRES_USER (default
# postgres) as superuser with POSTGRES_PASSWORD (required), scram-sha-256 for every TCP
# login, POSTGRES_DB (default: the user's name) created, then /docker-entrypoint-initdb.d/
# *.sql run with psql and *.sh sourced, in name order, against that database. Meanwhile the
# server listens on no TCP port and on a private socket, so a health check (pg_isready) does
# not pass before that is done. Then postgres runs as the postgres user, in the foreground.
set -euo pipefail

if [ "${1:-}" != postgres ]; then
  exec "$@"
fi
shift
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "$(id -u)" -eq 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "error: the database is not initialised and POSTGRES_PASSWORD is not set" >&2
    exit 1
  fi
  echo "stand-in postgres: initialising $PGDATA (superuser $user, database $db)"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options, as in the official image
  initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    --auth-local=trust --auth-host=scram-sha-256 ${POSTGRES_INITDB_ARGS:-} >/dev/null
  printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"

  socket_dir=$(mktemp -d)
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$socket_dir" start >/dev/null
  export PGHOST=$socket_dir PGUSER=$user
  if [ "$db" != postgres ]; then
    psql -v ON_ERROR_STOP=1 -q -d postgres -v db="$db" <<<'CREATE DATABASE :"db";'
  fi
  for file in /docker-entrypoint-initdb.d/*; do
    [ -e "$file" ] || continue
    case "$file" in
      *.sql) echo "stand-in postgres: running $file"; psql -v ON_ERROR_STOP=1 -q -d "$db" -f "$file" ;;
      *.sh) echo "stand-in postgres: sourcing $file"; # shellcheck disable=SC1090
        . "$file" ;;
      *) echo "stand-in postgres: ignoring $file" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  unset PGHOST PGUSER
  rmdir "$socket_dir"
  echo "stand-in postgres: initialised"
fi

exec postgres "$@"
