#!/usr/bin/env bash
# pgpool-II in front of the two replicas, for the benchmark's read baseline: the proxy a user
# would otherwise put in front of replicas, balancing each statement over both.
#
#   pgpool-baseline.sh start DIR    installs Debian's pgpool2 when missing, starts pgpool-II
#                                   with its files in DIR on a free port from 5439, and
#                                   prints that port
#   pgpool-baseline.sh stop DIR     stops it
#
# Mode `logical_replication`: the replicas are independent servers kept level by the
# replicator, not streaming standbys, and this is the mode for such servers that still
# balances reads. Logins: scram-sha-256 against pool_passwd, which holds the catalogue
# role's password, so pgpool-II can log in to the replicas under trust or scram alike.
# The package's own service is disabled where systemd runs: it would start on port 5432.
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

REPLICA_PORTS=(5433 5434)

ensure_installed() {
  command -v pgpool >/dev/null && return
  log "installing pgpool2 from Debian's packages (the read baseline)"
  as_root apt-get update -q >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgpool2 >&2
  if has_systemd; then as_root systemctl disable --now pgpool2 >&2 || true; fi
}

free_port() {
  local port
  for port in $(seq 5439 5459); do
    port_open "$port" || { echo "$port"; return; }
  done
  die "no free port in 5439-5459 for pgpool-II"
}

start() {
  local dir=$1 port
  ensure_installed
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  port=$(free_port)
  {
    cat <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
pcp_listen_addresses = ''
pcp_socket_dir = '$dir'
pid_file_name = '$dir/pgpool.pid'
logdir = '$dir'
backend_clustering_mode = 'logical_replication'
load_balance_mode = on
statement_level_load_balance = on
num_init_children = 128
max_pool = 1
connection_cache = on
memory_cache_enabled = off
enable_pool_hba = on
pool_passwd = 'pool_passwd'
health_check_period = 0
sr_check_period = 0
sr_check_user = '$CATALOGUE_DB_USER'
sr_check_password = ''
CONF
    local i=0 replica
    for replica in "${REPLICA_PORTS[@]}"; do
      cat <<CONF
backend_hostname$i = '127.0.0.1'
backend_port$i = $replica
backend_weight$i = 1
backend_flag$i = 'DISALLOW_TO_FAILOVER'
CONF
      i=$((i + 1))
    done
  } >"$dir/pgpool.conf"
  echo 'host all all 127.0.0.1/32 scram-sha-256' >"$dir/pool_hba.conf"
  echo "$CATALOGUE_DB_USER:TEXT$CATALOGUE_DB_PASSWORD" >"$dir/pool_passwd"
  chmod 600 "$dir/pool_passwd"
  : >"$dir/pcp.conf"
  pgpool -f "$dir/pgpool.conf" -a "$dir/pool_hba.conf" -F "$dir/pcp.conf" -n >"$dir/pgpool.log" 2>&1 &
  for _ in $(seq 100); do
    port_open "$port" && { echo "$port"; return; }
    kill -0 "$!" 2>/dev/null || die "pgpool-II exited; see $dir/pgpool.log"
    sleep 0.1
  done
  die "pgpool-II does not listen on $port after 10 s; see $dir/pgpool.log"
}

stop() {
  local dir=$1
  [ -f "$dir/pgpool.conf" ] || return 0
  pgpool -f "$dir/pgpool.conf" -m fast stop >/dev/null 2>&1 || true
}

case ${1:-} in
  start) start "${2:?a directory}" ;;
  stop) stop "${2:?a directory}" ;;
  *) die "usage: $0 start DIR | stop DIR" ;;
esac
