#!/usr/bin/env bash
# `make test-api`: schemathesis, with every check, against write-api and read-api (debug
# builds) on a database and RabbitMQ vhost of their own, removed afterwards. It generates
# requests from each service's OpenAPI document and fails on any 5xx, any answer the
# document does not describe, and any request the document calls valid that the server
# refuses (or the reverse). A pinned schemathesis is installed in target/api-fuzz/venv.
#
# Two runs per service: every phase but coverage with every check, then the coverage phase
# with every check but positive_data_acceptance. Schemathesis' coverage phase sends header
# values that break the header's declared `pattern` as valid ones (`If-Match: 0`), which the
# server rightly refuses; the fuzzing and stateful phases do check that acceptance.
#
#   API_FUZZ_EXAMPLES   examples per operation in the fuzzing phase (default 100)
#   API_FUZZ_REQUIRED   1: fail, instead of skipping loudly, when schemathesis cannot be
#                       installed
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
ROOT=$(cd ../.. && pwd)
SCHEMATHESIS_VERSION=4.32.5
VENV=$ROOT/target/api-fuzz/venv
EXAMPLES=${API_FUZZ_EXAMPLES:-100}
admin_url=${TEST_PG_ADMIN_URL:-postgres://$CATALOGUE_DB_USER:$CATALOGUE_DB_PASSWORD@127.0.0.1:5432/postgres}

ensure_schemathesis() {
  if [ -x "$VENV/bin/schemathesis" ] &&
    "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    return
  fi
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    log "installing python3 and python3-venv from Debian's packages"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv
  fi
  log "installing schemathesis $SCHEMATHESIS_VERSION in $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  if ! "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"; then
    rm -rf "$VENV"
    # Without the Python package index there is nothing to run; say so loudly rather than
    # fail every other test's verdict with it. API_FUZZ_REQUIRED=1 makes it a failure.
    [ "${API_FUZZ_REQUIRED:-0}" = 1 ] && die "cannot install schemathesis"
    printf '\033[1;33mSKIPPED: schemathesis could not be installed (no access to the Python package index?); the OpenAPI documents were not fuzzed\033[0m\n' >&2
    exit 0
  fi
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

name=test_apifuzz_$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$admin_url" -q -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" 2>/dev/null || true
  curl -fsS -u guest:guest -X DELETE "$RABBITMQ_API/api/vhosts/$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
work=$(mktemp -d)
trap cleanup EXIT

ensure_schemathesis
(cd "$ROOT" && cargo build --locked -q --bin write-api --bin read-api)

psql "$admin_url" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$name\""
curl -fsS -u guest:guest -X PUT "$RABBITMQ_API/api/vhosts/$name" >/dev/null
curl -fsS -u guest:guest -X PUT -H 'content-type: application/json' \
  --data '{"configure":".*","write":".*","read":".*"}' "$RABBITMQ_API/api/permissions/$name/guest" >/dev/null
database_url=$(printf '%s' "$admin_url" | sed "s#/[^/]*\$#/$name#")

start() {
  local service=$1 port=$2
  shift 2
  env -u RUST_LOG HOST=127.0.0.1 PORT="$port" LOG_FORMAT=text "$@" \
    "$ROOT/target/debug/$service" >"$work/$service.log" 2>&1 &
  pids+=($!)
  local waited=0
  until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
    sleep 0.5
    waited=$((waited + 1))
    if [ "$waited" -gt 120 ]; then
      cat "$work/$service.log" >&2
      die "$service was not ready within 60 s"
    fi
  done
}

write_port=$(free_port)
start write-api "$write_port" DATABASE_URL="$database_url" \
  RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/$name"
read_port=$(free_port)
# The primary's own database stands in as the one replica: the document, not replication,
# is under test here.
start read-api "$read_port" DATABASE_URL="$database_url" REPLICA_URLS="replica-1=$database_url"

# Schemathesis keeps a cache where it runs: in the scratch directory, removed at the end.
cd "$work"
failed=()
for service in write-api read-api; do
  port=$write_port
  [ "$service" = read-api ] && port=$read_port
  url=http://127.0.0.1:$port/openapi.json
  log "schemathesis against $service: every phase but coverage, every check"
  "$VENV/bin/schemathesis" --config-file "$ROOT/deploy/schemathesis.toml" run "$url" \
    --checks all --phases examples,fuzzing,stateful --max-examples "$EXAMPLES" --seed 1 ||
    failed+=("$service (fuzzing, stateful)")
  log "schemathesis against $service: the coverage phase, every check but positive_data_acceptance"
  "$VENV/bin/schemathesis" --config-file "$ROOT/deploy/schemathesis.toml" run "$url" \
    --checks all --exclude-checks positive_data_acceptance --phases coverage --seed 1 ||
    failed+=("$service (coverage)")
done
if [ "${#failed[@]}" -gt 0 ]; then
  for service in write-api read-api; do
    printf -- '----- %s log -----\n' "$service" >&2
    tail -n 50 "$work/$service.log" >&2
  done
  die "schemathesis found failures: ${failed[*]}"
fi
log "schemathesis: no failures against write-api and read-api"
