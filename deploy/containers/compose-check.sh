#!/usr/bin/env bash
# `make test-compose`: brings the real docker-compose.yml up, checks the stack in its
# containers, and takes it down again, printing each check and the time it took:
#
#   deploy/containers/compose-check.sh [--keep]
#
#   --keep   leave the stack up at the end (take it down: the command printed then)
#
# 1. a container engine (engine.sh: Docker where one answers, else podman and docker-compose
#    from Debian's packages, podman's Docker API for compose, health checks run every 2 s);
# 2. the base images the files name (stand-in-images.sh: pulled, or where no image registry
#    answers built locally from Debian's packages under the same names, and said so);
# 3. the project's image, one build for the three services (`compose build`; the first build
#    is the long step), then `up` with every service healthy through depends_on;
# 4. checks: the services run as the unprivileged user; the RabbitMQ management UI answers;
#    the broker's quorum-queue write-ahead log has the compose file's size; a write with the
#    compose file's token is read back through read-api from a replica (X-Served-By); with
#    `--scale replicator=3`, 2,000 writes converge (`replicator verify` in a container exits
#    0); a replica stopped under read load costs no 5xx and rejoins once started; `down` and
#    `up` again keep the data (named volumes);
# 5. `down -v` (also on failure or Ctrl-C): no container, volume or network is left.
#
# Isolated from the machine's own servers and from a stack started by hand: its own project
# name (COMPOSE_PROJECT_NAME, default catalogue-compose-test) and host ports moved off the
# usual ones (defaults below; any can be set in the environment). It never touches the
# machine's PostgreSQL or RabbitMQ. Needs root where podman must be installed or runs rootful.
# Exit status 0 only when every check passed. Log: target/compose-check/<time>.log.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

KEEP=0
for arg in "$@"; do
  case "$arg" in
    --keep) KEEP=1 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 && !/shellcheck/ { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) printf 'error: unknown argument %s (see --help)\n' "$arg" >&2; exit 2 ;;
  esac
done

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-catalogue-compose-test}
export WRITE_API_PORT=${WRITE_API_PORT:-18000}
export READ_API_PORT=${READ_API_PORT:-18001}
export POSTGRES_PRIMARY_PORT=${POSTGRES_PRIMARY_PORT:-18432}
export POSTGRES_REPLICA_1_PORT=${POSTGRES_REPLICA_1_PORT:-18433}
export POSTGRES_REPLICA_2_PORT=${POSTGRES_REPLICA_2_PORT:-18434}
export RABBITMQ_PORT=${RABBITMQ_PORT:-18672}
export RABBITMQ_MANAGEMENT_PORT=${RABBITMQ_MANAGEMENT_PORT:-18673}
PROJECT=$COMPOSE_PROJECT_NAME
WRITES=${COMPOSE_CHECK_WRITES:-2000}
# The images the two files name (base images only: the project's own is built).
BASE_IMAGES=(debian:bookworm-slim "rust:1.90-slim-bookworm" postgres:15 rabbitmq:3.13-management)
APP_SERVICES=(write-api replicator read-api)

mkdir -p target/compose-check
LOG=target/compose-check/$(date +%Y%m%d-%H%M%S).log
WORK=$(mktemp -d)
exec > >(tee "$LOG") 2>&1

STARTED_ALL=$SECONDS
RESULTS=()
say() { printf '%(%H:%M:%S)T ==> %s\n' -1 "$*"; }
note() { printf '             %s\n' "$*"; }

# step NAME FUNCTION: runs the check, prints its outcome and time; the first failure ends the
# run (every later check needs what the earlier ones set up).
step() {
  local name=$1 started=$SECONDS status=0
  shift
  say "$name"
  "$@" || status=$?
  local took=$((SECONDS - started))
  if [ "$status" -eq 0 ]; then
    RESULTS+=("$(printf 'ok      %5ss  %s' "$took" "$name")")
    say "ok: $name (${took}s)"
  else
    RESULTS+=("$(printf 'FAILED  %5ss  %s' "$took" "$name")")
    say "FAILED: $name (${took}s)"
    exit 1
  fi
}

fail() { printf '             FAILED: %s\n' "$*"; return 1; }

compose() { $COMPOSE_CMD "$@"; }

summary() {
  local status=$1
  echo
  echo "=== make test-compose: $(date '+%Y-%m-%d %H:%M'), project $PROJECT, engine $ENGINE_KIND ==="
  printf '%s\n' "${RESULTS[@]}"
  printf 'total   %5ss\n' "$((SECONDS - STARTED_ALL))"
  echo "result: $([ "$status" = 0 ] && echo PASSED || echo FAILED)   log: $LOG"
}

STARTED_HELPERS=0
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "${COMPOSE_CMD:-}" ]; then
    if [ "$KEEP" = 1 ] && [ "$status" = 0 ]; then
      say "stack kept: take it down with"
      note "COMPOSE_PROJECT_NAME=$PROJECT ${DOCKER_HOST:+DOCKER_HOST=$DOCKER_HOST }$COMPOSE_CMD down -v"
    else
      say "taking the stack down (down -v)"
      compose down -v --remove-orphans -t 10 >"$WORK/down.log" 2>&1 || cat "$WORK/down.log"
      local left
      left=$(leftovers)
      if [ -n "$left" ]; then
        printf '             FAILED: left behind:\n%s\n' "$left"
        status=1
      else
        note "no container, volume or network of $PROJECT left"
      fi
      [ "$STARTED_HELPERS" = 0 ] || engine_helpers_stop
    fi
  fi
  rm -rf "$WORK"
  summary "$status"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The project's containers, volumes and networks still there, one a line: by compose's label
# or by name (PROJECT_… with compose v1, PROJECT-… with v2).
leftovers() {
  local label=com.docker.compose.project=$PROJECT kind
  for kind in container volume network; do
    {
      case "$kind" in
        container) "$ENGINE" ps -a --filter "label=$label" --format '{{.Names}}'
          "$ENGINE" ps -a --format '{{.Names}}' ;;
        *) "$ENGINE" "$kind" ls --filter "label=$label" --format '{{.Name}}'
          "$ENGINE" "$kind" ls --format '{{.Name}}' ;;
      esac
    } 2>/dev/null | grep -E "^${PROJECT}[-_]" | sort -u | sed "s/^/  $kind /" || true
  done
}

# True when something listens on TCP port $1 of this machine.
port_taken() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Container ids of a service (running ones), one a line.
service_containers() {
  "$ENGINE" ps -q --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1"
}

health_of() {
  "$ENGINE" inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$1" 2>/dev/null
}

# Waits up to $1 s until every container of the project is healthy (and, for each service
# SERVICE=N given after it, that N of that service run). Prints how long each took.
wait_healthy() {
  local timeout=$1 deadline=$((SECONDS + $1)) ids id want service count all_ok
  shift
  while :; do
    all_ok=1
    for want in "$@"; do
      service=${want%=*} count=${want#*=}
      [ "$(service_containers "$service" | wc -l)" -ge "$count" ] || all_ok=0
    done
    ids=$("$ENGINE" ps -q --filter "label=com.docker.compose.project=$PROJECT")
    [ -n "$ids" ] || all_ok=0
    for id in $ids; do
      [ "$(health_of "$id")" = healthy ] || all_ok=0
    done
    [ "$all_ok" = 0 ] || break
    if [ "$SECONDS" -ge "$deadline" ]; then
      for id in $ids; do
        note "$("$ENGINE" inspect --format '{{.Name}}' "$id"): $(health_of "$id")"
      done
      fail "not every container healthy within ${timeout}s"
      return 1
    fi
    sleep 2
  done
  for id in $ids; do
    note "$("$ENGINE" inspect --format '{{.Name}}' "$id" | sed 's#^/##'): healthy"
  done
}

# ---------------------------------------------------------------------------------------------

check_engine() {
  # shellcheck source=engine.sh
  . "$HERE/engine.sh" || return 1
  local had_service=0
  [ -f "$CATALOGUE_CONTAINERS_DIR/compose/service.pid" ] &&
    kill -0 "$(cat "$CATALOGUE_CONTAINERS_DIR/compose/service.pid")" 2>/dev/null && had_service=1
  engine_compose_env || return 1
  engine_healthchecks_start || return 1
  [ "$ENGINE_KIND" = docker ] || [ "$had_service" = 1 ] || STARTED_HELPERS=1
  note "engine: $ENGINE_KIND ($("$ENGINE" --version 2>/dev/null | head -n 1)); compose: $COMPOSE_CMD ($($COMPOSE_CMD version --short 2>/dev/null || true))"
  [ -z "${DOCKER_HOST:-}" ] || note "compose talks to $DOCKER_HOST"
  local port taken=()
  for port in "$WRITE_API_PORT" "$READ_API_PORT" "$POSTGRES_PRIMARY_PORT" "$POSTGRES_REPLICA_1_PORT" \
    "$POSTGRES_REPLICA_2_PORT" "$RABBITMQ_PORT" "$RABBITMQ_MANAGEMENT_PORT"; do
    port_taken "$port" && taken+=("$port")
  done
  if [ ${#taken[@]} -gt 0 ]; then
    fail "host ports already in use: ${taken[*]} (move them: WRITE_API_PORT=… etc., see docker-compose.yml)"
    return 1
  fi
  note "project $PROJECT; host ports: write-api $WRITE_API_PORT, read-api $READ_API_PORT, PostgreSQL $POSTGRES_PRIMARY_PORT-$POSTGRES_REPLICA_2_PORT, RabbitMQ $RABBITMQ_PORT (UI $RABBITMQ_MANAGEMENT_PORT)"
  # Left over from a killed run: start clean.
  if [ -n "$(leftovers)" ]; then
    note "removing what an earlier run of $PROJECT left"
    compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
  fi
  compose config -q || fail "compose rejects docker-compose.yml"
}

check_base_images() {
  "$HERE/stand-in-images.sh" "${BASE_IMAGES[@]}" || return 1
  local image kind carries
  for image in "${BASE_IMAGES[@]}"; do
    kind=$("$ENGINE" image inspect --format '{{ index .Config.Labels "catalogue.stand-in" }}' "$image" 2>/dev/null || true)
    carries=$("$ENGINE" image inspect --format '{{ index .Config.Labels "catalogue.stand-in.carries" }}' "$image" 2>/dev/null || true)
    if [ "$kind" = true ]; then
      note "$image: a LOCAL STAND-IN (no image registry here)${carries:+, carries $carries}"
    else
      note "$image: the real image"
    fi
  done
}

check_build() {
  local image=catalogue:${CATALOGUE_IMAGE_TAG:-local} before
  before=$("$ENGINE" image inspect --format '{{.Id}}' "$image" 2>/dev/null || echo none)
  compose build >"$WORK/build.log" 2>&1 || {
    tail -n 40 "$WORK/build.log"
    fail "compose build"
    return 1
  }
  grep -E '^(Step|STEP) ' "$WORK/build.log" | tail -n 3 | sed 's/^/             /' || true
  note "$image: $("$ENGINE" image inspect --format '{{.Id}}' "$image" | cut -c1-12), created $("$ENGINE" image inspect --format '{{.Created}}' "$image" | cut -c1-19), $("$ENGINE" image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}') (was ${before:0:12})"
}

check_up() {
  compose up -d >"$WORK/up.log" 2>&1 || {
    cat "$WORK/up.log"
    fail "compose up"
    return 1
  }
  wait_healthy 600 postgres-primary=1 postgres-replica-1=1 postgres-replica-2=1 rabbitmq=1 \
    write-api=1 replicator=1 read-api=1
}

check_unprivileged() {
  local service id uid
  for service in "${APP_SERVICES[@]}"; do
    for id in $(service_containers "$service"); do
      # shellcheck disable=SC2016 # awk's $2, in the container
      uid=$("$ENGINE" exec "$id" awk '/^Uid:/ { print $2 }' /proc/1/status)
      [ "$uid" = 10001 ] || { fail "$service runs as uid $uid, not 10001"; return 1; }
      note "$service: pid 1 runs as uid $uid ($("$ENGINE" exec "$id" sh -c 'getent passwd 10001 | cut -d: -f1'))"
    done
  done
}

check_management_ui() {
  local url=http://127.0.0.1:$RABBITMQ_MANAGEMENT_PORT/api/overview body
  body=$(curl -fsS -u catalogue:catalogue "$url") || { fail "GET $url"; return 1; }
  note "management API: RabbitMQ $(python3 -c 'import json,sys; print(json.load(sys.stdin)["rabbitmq_version"])' <<<"$body")"
  curl -fsS -o /dev/null "http://127.0.0.1:$RABBITMQ_MANAGEMENT_PORT/" || { fail "the UI's page"; return 1; }
  note "the UI's page answers on :$RABBITMQ_MANAGEMENT_PORT"
}

# The broker's quorum-queue write-ahead log limit, as the node itself reports it, against
# the compose file's `-ra wal_max_size_bytes` (docs/operations.md: a full default-sized log
# stalls the queues for seconds when it rolls over).
check_broker_wal() {
  local want id got
  want=$(compose config | grep -o 'wal_max_size_bytes [0-9]*' | head -1 | awk '{ print $2 }')
  [ -n "$want" ] || { fail "the compose file sets no -ra wal_max_size_bytes"; return 1; }
  id=$(service_containers rabbitmq | head -1)
  got=$("$ENGINE" exec "$id" rabbitmqctl -q eval \
    'maps:get(wal_max_size_bytes, ra_system:fetch(quorum_queues)).' | tr -d '[:space:]')
  [ "$got" = "$want" ] || { fail "the broker's quorum-queue log rolls over at '$got' bytes, not $want"; return 1; }
  note "quorum-queue write-ahead log: rolls over at $got bytes, as the compose file sets"
}

TOKEN=
FIRST_ID=
check_write_read() {
  TOKEN=$(compose config | awk '/WRITE_API_TOKEN:/ { print $2; exit }' | tr -d "'\"")
  [ -n "$TOKEN" ] || { fail "no WRITE_API_TOKEN in the compose file"; return 1; }
  local api=http://127.0.0.1:$WRITE_API_PORT/api/products status
  status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$api" -H 'content-type: application/json' \
    -d '{"name":"no token","price":1,"stock":1}')
  [ "$status" = 401 ] || { fail "a write without the token got $status, not 401"; return 1; }
  note "without the token: 401"
  local answer
  answer=$(curl -fsS -X POST "$api" -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \
    -d '{"name":"compose check","price":12.5,"stock":3}') || { fail "POST with the token"; return 1; }
  FIRST_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])' <<<"$answer")
  note "written with the compose file's token: $FIRST_ID"
  local deadline=$((SECONDS + 60)) served_by=
  while [ "$SECONDS" -lt "$deadline" ]; do
    served_by=$(curl -s -D - -o "$WORK/read.json" -H 'X-Min-Version: 1' \
      "http://127.0.0.1:$READ_API_PORT/api/products/$FIRST_ID" |
      awk 'BEGIN { IGNORECASE = 1 } /^x-served-by:/ { gsub(/\r/, ""); print $2 }')
    case "$served_by" in replica-*) break ;; esac
    sleep 1
  done
  case "$served_by" in
    replica-*) note "read back through read-api: X-Served-By: $served_by, $(tr -d '\n' <"$WORK/read.json" | cut -c1-90)…" ;;
    *) fail "not read from a replica within 60 s (last X-Served-By: ${served_by:-none})"; return 1 ;;
  esac
}

# Runs `replicator verify` in a replicator container until it exits 0 (within $1 s).
verify_converges() {
  local deadline=$((SECONDS + $1)) tries=0
  while :; do
    tries=$((tries + 1))
    # In a running replicator container: docker-compose 1.29's `run` asks podman for links,
    # which its API refuses ("link is not supported").
    if compose exec -T replicator replicator verify >"$WORK/verify.log" 2>&1; then
      grep -v '^Creating\|^Starting' "$WORK/verify.log" | sed 's/^/             verify: /'
      note "replicator verify exited 0 (attempt $tries)"
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      sed 's/^/             verify: /' "$WORK/verify.log"
      fail "replicator verify did not exit 0 within $1 s ($tries attempts)"
      return 1
    fi
    sleep 3
  done
}

check_scaled_writes() {
  compose up -d --no-recreate --scale replicator=3 >"$WORK/scale.log" 2>&1 || {
    cat "$WORK/scale.log"
    fail "--scale replicator=3"
    return 1
  }
  wait_healthy 300 replicator=3 || return 1
  local result
  result=$(python3 "$HERE/http-load.py" writes "http://127.0.0.1:$WRITE_API_PORT/api/products" \
    "$TOKEN" "$WRITES" 16 "$WORK/ids") || { fail "the write load"; return 1; }
  note "$WRITES writes, 16 at a time: $result"
  [ "$(wc -l <"$WORK/ids")" -eq "$WRITES" ] || { fail "not every write got 201"; return 1; }
  verify_converges 180
}

check_replica_outage() {
  local stop=$WORK/stop-reads result five_xx
  python3 "$HERE/http-load.py" reads "http://127.0.0.1:$READ_API_PORT" "$WORK/ids" "$stop" 8 \
    >"$WORK/reads.json" &
  local load=$!
  sleep 3
  compose stop -t 10 postgres-replica-1 >/dev/null 2>&1 || { fail "stopping postgres-replica-1"; kill "$load"; return 1; }
  note "postgres-replica-1 stopped under read load"
  local deadline=$((SECONDS + 60)) state=
  while [ "$SECONDS" -lt "$deadline" ]; do
    state=$(replica_state replica-1)
    [ "$state" = out ] && break
    sleep 1
  done
  note "read-api took replica-1 out of rotation: ${state:-?} ($(replica_reason replica-1))"
  sleep 5
  compose start postgres-replica-1 >/dev/null 2>&1 || { fail "starting postgres-replica-1"; kill "$load"; return 1; }
  local back_started=$SECONDS
  deadline=$((SECONDS + 180))
  while [ "$SECONDS" -lt "$deadline" ]; do
    state=$(replica_state replica-1)
    [ "$state" = in ] && break
    sleep 1
  done
  sleep 3
  touch "$stop"
  wait "$load" || true
  result=$(cat "$WORK/reads.json")
  note "reads meanwhile: $result"
  [ "$state" = in ] || { fail "replica-1 not back in rotation within 180 s of its start"; return 1; }
  note "replica-1 back in rotation $((SECONDS - back_started - 3)) s after its container started"
  five_xx=$(python3 -c 'import json,sys; s=json.load(sys.stdin)["status"]; print(sum(v for k, v in s.items() if not k.startswith("2")))' <<<"$result")
  [ "$five_xx" = 0 ] || { fail "$five_xx reads were not 2xx"; return 1; }
  wait_healthy 120 || return 1
}

# in | out | unknown: replica $1 in read-api's rotation or not.
replica_state() {
  curl -fsS "http://127.0.0.1:$READ_API_PORT/api/replicas" 2>/dev/null | python3 -c '
import json, sys
name = sys.argv[1]
try:
    replicas = json.load(sys.stdin)["data"]["replicas"]
    print(next(("in" if r["healthy"] else "out") for r in replicas if r["name"] == name))
except Exception:
    print("unknown")' "$1"
}

replica_reason() {
  curl -fsS "http://127.0.0.1:$READ_API_PORT/api/replicas" 2>/dev/null | python3 -c '
import json, sys
name = sys.argv[1]
try:
    replicas = json.load(sys.stdin)["data"]["replicas"]
    print(next(r.get("reason") or "no reason given" for r in replicas if r["name"] == name))
except Exception:
    print("?")' "$1"
}

count_rows() {
  compose exec -T postgres-primary psql -U catalogue -d products -tAc \
    'SELECT count(*) FROM products' | tr -d '[:space:]'
}

check_down_up_keeps_data() {
  local before after
  before=$(count_rows) || { fail "counting the primary's products"; return 1; }
  compose down -t 10 >"$WORK/down1.log" 2>&1 || { cat "$WORK/down1.log"; fail "down"; return 1; }
  [ -z "$("$ENGINE" ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ] ||
    { fail "containers left after down"; return 1; }
  note "down: every container removed, volumes kept ($("$ENGINE" volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | wc -l) volumes)"
  compose up -d >"$WORK/up2.log" 2>&1 || { cat "$WORK/up2.log"; fail "up again"; return 1; }
  wait_healthy 600 postgres-primary=1 postgres-replica-1=1 postgres-replica-2=1 rabbitmq=1 \
    write-api=1 replicator=1 read-api=1 || return 1
  after=$(count_rows)
  [ "$before" = "$after" ] || { fail "the primary had $before products, now $after"; return 1; }
  note "the primary still has its $after products"
  local status
  status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$READ_API_PORT/api/products/$FIRST_ID")
  [ "$status" = 200 ] || { fail "the first write reads $status after down/up"; return 1; }
  note "the first write still reads 200 through read-api"
  verify_converges 120
}

say "make test-compose: docker-compose.yml and deploy/Dockerfile, run for real; log in $LOG"
step "container engine and compose" check_engine
step "base images" check_base_images
step "image build (one for the three services)" check_build
step "up: every service healthy (depends_on: service_healthy)" check_up
step "services run as the unprivileged user" check_unprivileged
step "RabbitMQ management UI answers" check_management_ui
step "RabbitMQ's quorum-queue log is the compose file's size" check_broker_wal
step "a write with the compose token read back from a replica" check_write_read
step "--scale replicator=3 and $WRITES writes converge (replicator verify)" check_scaled_writes
step "a replica stopped under read load: no 5xx, rejoins" check_replica_outage
step "down and up again keep the data (named volumes)" check_down_up_keeps_data
