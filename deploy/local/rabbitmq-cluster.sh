#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, beside the machine's own node and never
# touching it: its own node names (rmq1..3@localhost), ports, Erlang cookie, data and logs.
#
#   rabbitmq-cluster.sh up       start the three nodes and cluster them (idempotent)
#   rabbitmq-cluster.sh down     stop them and delete their data
#   rabbitmq-cluster.sh status   which nodes run
#   rabbitmq-cluster.sh stop N   stop node N (1..3), as an outage would; `kill N` is kill -9
#   rabbitmq-cluster.sh start N  start node N again (it rejoins with its data)
#   rabbitmq-cluster.sh urls     the AMQP URLs, comma-separated (RABBITMQ_URLS)
#   rabbitmq-cluster.sh ctl ARGS rabbitmqctl ARGS with the cluster's cookie, on the first
#                                running node unless ARGS name one (-n rmq2@localhost)
#
# Ports: AMQP 5681-5683, Erlang distribution 25681-25683. CATALOGUE_RMQ_CLUSTER_DIR moves the
# state (default /var/tmp/catalogue-rmq-cluster). The broker user is guest/guest (loopback).
#
# The same script runs other sets of nodes beside this one (the benchmark's single node, see
# bench.sh), each with its own state directory and these settings:
#   CATALOGUE_RMQ_NODE_PREFIX  node names <prefix>1@localhost, … (default rmq)
#   CATALOGUE_RMQ_SIZE         how many nodes (default 3)
#   CATALOGUE_RMQ_PORT_BASE    node N listens on AMQP port base+N, Erlang distribution
#                              20000+base+N (default 5680)
#   CATALOGUE_RMQ_CONF         extra lines for every node's rabbitmq.conf
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh

STATE=${CATALOGUE_RMQ_CLUSTER_DIR:-/var/tmp/catalogue-rmq-cluster}
STARTED=$(date +%s)
BIN=/usr/lib/rabbitmq/bin
PREFIX=${CATALOGUE_RMQ_NODE_PREFIX:-rmq}
SIZE=${CATALOGUE_RMQ_SIZE:-3}
PORT_BASE=${CATALOGUE_RMQ_PORT_BASE:-5680}
EXTRA_CONF=${CATALOGUE_RMQ_CONF:-}
mapfile -t NODES < <(seq "$SIZE")

node_name() { echo "$PREFIX$1@localhost"; }
amqp_port() { echo $((PORT_BASE + $1)); }
dist_port() { echo $((20000 + PORT_BASE + $1)); }
pid_file() { echo "$STATE/node$1/pid"; }

# Erlang's schedulers spin while they wait for work, which on busy cores (the fault suite runs
# loaded stacks beside the cluster) competes with the work: `up` took 399 s instead of 74 with
# it (docs/dependencies.md#erlangs-scheduler-busy-wait-on-busy-cores). Nodes and CLI go
# without it.
NO_BUSY_WAIT="+sbwt none +sbwtdcpu none +sbwtdio none"

# The cluster's own HOME: its cookie, different from the machine's node's, keeps the two
# apart; the CLI reads it from the same HOME.
cluster_env() {
  export HOME="$STATE/home"
  export RABBITMQ_CTL_ERL_ARGS="$NO_BUSY_WAIT"
}

ensure_installed() {
  [ -x "$BIN/rabbitmq-server" ] && return
  log "installing rabbitmq-server from Debian's packages"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server
}

# Every CLI call is bounded: a node that never answers fails the step with its name instead of
# hanging whoever called the script.
CTL_TIMEOUT=${CATALOGUE_RMQ_CTL_TIMEOUT:-150}

ctl() {
  cluster_env
  timeout --kill-after=5 "$CTL_TIMEOUT" "$BIN/rabbitmqctl" "$@" || {
    local rc=$?
    [ "$rc" -eq 124 ] && echo "rabbitmqctl $*: no answer in ${CTL_TIMEOUT} s" >&2
    return "$rc"
  }
}

# Runs a node's command with only that node's environment (exported in a caller's shell,
# these variables would make a plain `rabbitmqctl` talk to the wrong node).
with_node_env() {
  local n=$1
  shift
  local dir="$STATE/node$n"
  (
    cluster_env
    export RABBITMQ_NODENAME
    RABBITMQ_NODENAME=$(node_name "$n")
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT
    RABBITMQ_NODE_PORT=$(amqp_port "$n")
    export RABBITMQ_DIST_PORT
    RABBITMQ_DIST_PORT=$(dist_port "$n")
    export RABBITMQ_MNESIA_BASE="$dir/mnesia"
    export RABBITMQ_MNESIA_DIR="$dir/mnesia/$RABBITMQ_NODENAME"
    export RABBITMQ_LOG_BASE="$dir/log"
    export RABBITMQ_PID_FILE
    RABBITMQ_PID_FILE=$(pid_file "$n")
    # Without these the machine's /etc/rabbitmq files are read (node name, port 5672, …).
    export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
    export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} $NO_BUSY_WAIT"
    # A crash dump lands in the current directory: each node has its own.
    cd "$dir"
    "$@"
  )
}

prepare() {
  mkdir -p "$STATE/home"
  if [ ! -f "$STATE/home/.erlang.cookie" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/home/.erlang.cookie"
    chmod 400 "$STATE/home/.erlang.cookie"
  fi
  for n in "${NODES[@]}"; do
    local dir="$STATE/node$n"
    mkdir -p "$dir/mnesia" "$dir/log"
    printf 'listeners.tcp.local = 127.0.0.1:%s\nloopback_users = none\n%s\n' "$(amqp_port "$n")" "$EXTRA_CONF" >"$dir/rabbitmq.conf"
    echo '[].' >"$dir/enabled_plugins"
    : >"$dir/rabbitmq-env.conf"
  done
}

node_pid() {
  local file
  file=$(pid_file "$1")
  [ -f "$file" ] || return 1
  local pid
  pid=$(cat "$file")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start_node() {
  local n=$1
  if node_pid "$n" >/dev/null; then return; fi
  port_open "$(amqp_port "$n")" && die "port $(amqp_port "$n") is taken by something else"
  step "starting $(node_name "$n")"
  with_node_env "$n" "$BIN/rabbitmq-server" -detached
  # `await_startup` fails at once while the node is not up at all: wait on the pid first.
  ctl -n "$(node_name "$n")" wait "$(pid_file "$n")" --timeout 120 >/dev/null
}

stop_node() {
  local n=$1 pid
  pid=$(node_pid "$n") || return 0
  # `stop` takes the pid *file* and returns before the process is gone.
  ctl -n "$(node_name "$n")" stop "$(pid_file "$n")" >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

kill_node() {
  local pid
  pid=$(node_pid "$1") || return 0
  kill -9 "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

# Progress of a long command, with the seconds since it began: when a step hangs, the last
# line names it.
step() { log "$1 ($(($(date +%s) - STARTED)) s)"; }

up() {
  ensure_installed
  prepare
  local started=$STARTED
  for n in "${NODES[@]}"; do start_node "$n"; done
  local first
  first=$(node_name 1)
  for n in "${NODES[@]:1}"; do
    local node
    node=$(node_name "$n")
    if ! ctl -n "$first" cluster_status 2>/dev/null | grep -q "$node"; then
      # The CLI logs harmless errors while a node is between stop and start: keep them out
      # of the way, in the state directory.
      step "joining $node to $first"
      {
        ctl -n "$node" stop_app
        ctl -n "$node" reset
        ctl -n "$node" join_cluster "$first"
        ctl -n "$node" start_app
      } >>"$STATE/join.log" 2>&1 || die "joining $node to $first failed; see $STATE/join.log"
    fi
  done
  step "waiting for $SIZE nodes online"
  ctl -n "$first" await_online_nodes "$SIZE" --timeout 120 >/dev/null
  log "RabbitMQ cluster of $SIZE nodes up in $(($(date +%s) - started)) s: $(urls)"
}

down() {
  for n in "${NODES[@]}"; do stop_node "$n"; done
  rm -rf "$STATE"
  log "RabbitMQ cluster stopped and its data removed"
}

status() {
  for n in "${NODES[@]}"; do
    if pid=$(node_pid "$n"); then
      echo "$(node_name "$n") running (pid $pid, amqp 127.0.0.1:$(amqp_port "$n"))"
    else
      echo "$(node_name "$n") stopped"
    fi
  done
}

urls() {
  local list=()
  for n in "${NODES[@]}"; do list+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")"); done
  (IFS=,; echo "${list[*]}")
}

# `ctl` for callers: the first running node unless they name one.
ctl_command() {
  local arg
  for arg in "$@"; do
    case $arg in -n|--node|-n*|--node=*) ctl "$@"; return ;; esac
  done
  for n in "${NODES[@]}"; do
    if node_pid "$n" >/dev/null; then
      ctl -n "$(node_name "$n")" "$@"
      return
    fi
  done
  die "no node of the cluster runs"
}

node_arg() {
  [[ ${1:-} =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$SIZE" ] && { echo "$1"; return; }
  die "name a node: 1 to $SIZE"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  urls) urls ;;
  stop) stop_node "$(node_arg "${2:-}")" ;;
  kill) kill_node "$(node_arg "${2:-}")" ;;
  start) start_node "$(node_arg "${2:-}")" ;;
  ctl) shift; ctl_command "$@" ;;
  *) die "usage: $0 up|down|status|urls|stop N|kill N|start N|ctl ARGS" ;;
esac
