# Shared helpers of the local-environment scripts. Sourced, not run.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Runs a command as the postgres OS user (peer authentication over the local socket).
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits up to $2 seconds (default 60) for 127.0.0.1:$1 to accept connections.
wait_for_port() {
  local port=$1 seconds=${2:-60}
  for _ in $(seq "$((seconds * 5))"); do
    port_open "$port" && return 0
    sleep 0.2
  done
  die "nothing listens on 127.0.0.1:$port after ${seconds}s"
}

# True on a machine booted with systemd (not in most containers).
has_systemd() {
  [ -d /run/systemd/system ]
}

# The newest installed PostgreSQL major version.
pg_version() {
  ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1
}

# Credentials the local stack and the tests use. Change them here, in one place.
: "${CATALOGUE_DB_USER:=catalogue}"
: "${CATALOGUE_DB_PASSWORD:=catalogue}"
: "${CATALOGUE_READER_USER:=catalogue_reader}"
: "${CATALOGUE_READER_PASSWORD:=catalogue_reader}"
: "${CATALOGUE_AMQP_USER:=catalogue}"
: "${CATALOGUE_AMQP_PASSWORD:=catalogue}"
: "${CATALOGUE_AMQP_VHOST:=catalogue}"
: "${RABBITMQ_API:=http://127.0.0.1:15672}"

# A cluster of the installed PostgreSQL named `name` on `port`, created once (further
# arguments go to pg_createcluster, e.g. `-o wal_level=logical`), started when stopped, with
# the catalogue login.
ensure_cluster() {
  local name=$1 port=$2 version
  shift 2
  version=$(pg_version)
  if ! pg_lsclusters -h | awk '{print $2}' | grep -qx "$name"; then
    log "creating PostgreSQL cluster $name on port $port"
    as_root pg_createcluster "$@" "$version" "$name" -p "$port" >/dev/null
  fi
  if ! port_open "$port"; then
    log "starting PostgreSQL cluster $name"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start
    wait_for_port "$port"
  fi
  as_postgres psql -q -p "$port" -v ON_ERROR_STOP=1 -v user="$CATALOGUE_DB_USER" -v password="$CATALOGUE_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'user', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SQL
}
