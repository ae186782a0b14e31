#!/usr/bin/env bash
# The inside half of `make test-fresh` (fresh-machine.sh starts it): runs in a fresh Debian
# bookworm container, as root, and does what a new user of the README does:
#
#   1. installs Debian's Rust toolchain (rustc-web, cargo-web from bookworm-security) and git,
#      and clones the project at commit $1 from the repository mounted at /src/repo.git;
#   2. installs make (`apt-get update && apt-get install -y make`), runs `make run` in the
#      background until the stack says it is up, writes one product through write-api, reads
#      it back from read-api (served by a replica), then sends Ctrl-C (SIGINT to make's
#      process group) and checks the three services stop;
#   3. runs `make test`.
#
# Each step is timed. Logs and the summary go to /out (a directory of the host).
# Exit status 0 only when every step passed.
set -euo pipefail

COMMIT=${1:?usage: fresh-machine-inside.sh COMMIT}
OUT=/out
SRC=/root/catalogue
READY_TIMEOUT=${FRESH_READY_TIMEOUT:-3600}
STOP_TIMEOUT=${FRESH_STOP_TIMEOUT:-15}
TEST_TIMEOUT=${FRESH_TEST_TIMEOUT:-10800}
RUN_TESTS=${FRESH_RUN_TESTS:-1}
export DEBIAN_FRONTEND=noninteractive

log() { printf '%(%H:%M:%S)T ==> %s\n' -1 "$*"; }
fail() { log "FAILED: $*"; FAILURES+=("$*"); }
FAILURES=()
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
# One `key: value` line of the summary.
record() { printf '%-34s %s\n' "$1:" "$2" >>"$SUMMARY"; }

# Prefixes each line with the seconds since the stamper started.
stamp() {
  SECONDS=0
  while IFS= read -r line; do printf '[%5ds] %s\n' "$SECONDS" "$line"; done
}

# The stamp (in seconds) of the first log line containing $2, or nothing (never a failure:
# under `set -e` a missing line would end the whole check without a word).
stamp_of() {
  { grep -F -m 1 -- "$2" "$1" 2>/dev/null || true; } | sed -n 's/^\[ *\([0-9]*\)s\].*/\1/p'
}

# The pids of the stack's services (no procps on a fresh Debian: read /proc).
stack_pids() {
  local dir exe
  for dir in /proc/[0-9]*; do
    exe=$(readlink "$dir/exe" 2>/dev/null) || continue
    case "$exe" in
      "$SRC"/target/release/write-api | "$SRC"/target/release/replicator | "$SRC"/target/release/read-api) echo "${dir#/proc/}" ;;
    esac
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------------------
log "setting up the machine: Debian's Rust toolchain (rustc-web, cargo-web) and git"
started=$SECONDS
{
  apt-get update -q
  apt-get install -y -q rustc-web cargo-web git
} >"$OUT/setup.log" 2>&1 || { tail -n 20 "$OUT/setup.log"; fail "installing rustc-web cargo-web git (see setup.log)"; }
for tool in cargo rustc; do
  if ! command -v "$tool" >/dev/null; then
    fail "$tool is not on PATH after installing rustc-web/cargo-web: $(compgen -c "$tool" | sort -u | tr '\n' ' ')"
  fi
done
[ ${#FAILURES[@]} -eq 0 ] || { cat "$SUMMARY"; exit 1; }
record "rust toolchain" "$(rustc --version) / $(cargo --version) at $(command -v rustc), $(command -v cargo)"

git clone -q file:///src/repo.git "$SRC" >>"$OUT/setup.log" 2>&1 || { fail "git clone"; exit 1; }
git -C "$SRC" checkout -q --detach "$COMMIT" || { fail "git checkout $COMMIT"; exit 1; }
record "commit" "$(git -C "$SRC" log -1 --format='%h %s')"
setup_seconds=$((SECONDS - started))
log "set up in ${setup_seconds}s: $(rustc --version), commit $(git -C "$SRC" rev-parse --short HEAD)"

# ---------------------------------------------------------------------------------------
cd "$SRC"
log "as the README says: apt-get update && apt-get install -y make"
started=$SECONDS
{ apt-get update && apt-get install -y make; } >"$OUT/install-make.log" 2>&1 || fail "installing make (see install-make.log)"
make_seconds=$((SECONDS - started))

log "make run (in the background; its output in make-run.log)"
started=$SECONDS
# Its own session and process group, as a shell gives a foreground job: Ctrl-C in a terminal
# is a SIGINT to that group. The stamper stays outside the group, so it sees the whole output.
# A script's background job starts with SIGINT ignored, and a shell cannot trap a signal
# ignored on entry (run.sh's Ctrl-C trap would never fire): env gives make the default
# handling back, as a terminal's foreground job has.
setsid env --default-signal=INT,QUIT make run > >(stamp >"$OUT/make-run.log") 2>&1 &
make_pid=$!
pgid=$(awk '{print $5}' "/proc/$make_pid/stat" 2>/dev/null || true)
[ "$pgid" = "$make_pid" ] || log "warning: make's process group is $pgid, not its pid $make_pid"

ready=0
while [ $((SECONDS - started)) -lt "$READY_TIMEOUT" ]; do
  if grep -qF 'the stack is up' "$OUT/make-run.log" 2>/dev/null; then ready=1; break; fi
  kill -0 "$make_pid" 2>/dev/null || break
  sleep 2
done
run_seconds=$((SECONDS - started))
build_started=$(stamp_of "$OUT/make-run.log" 'building the three services (release)')
build_ended=$(stamp_of "$OUT/make-run.log" 'applying migrations to the primary')
build_seconds=
[ -n "$build_started" ] && [ -n "$build_ended" ] && build_seconds=$((build_ended - build_started))

run_ok=0
if [ "$ready" = 1 ]; then
  log "make run says the stack is up after ${run_seconds}s (release build ${build_seconds:-?}s)"
  run_ok=1
  if ! command -v curl >/dev/null; then
    fail "make run did not install curl"
    run_ok=0
  else
    for port in 8000 8001 8002; do
      curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" || { fail "GET :$port/readyz is not 200"; run_ok=0; }
    done
    answer=$(curl -sS -X POST http://127.0.0.1:8000/api/products \
      -H 'content-type: application/json' -d '{"name":"Fresh machine","price":12.34,"stock":5}' \
      -w '\n%{http_code}' || true)
    status=${answer##*$'\n'}
    id=$(printf '%s' "$answer" | sed -n 's/.*"id":"\([0-9a-fA-F-]*\)".*/\1/p' | head -n 1)
    if [ "$status" != 201 ] || [ -z "$id" ]; then
      fail "POST /api/products answered $status: ${answer%$'\n'*}"
      run_ok=0
    else
      served_by=
      for _ in $(seq 50); do
        headers=$(curl -sS -D - -o /tmp/read-body -w '%{http_code}' "http://127.0.0.1:8001/api/products/$id" || true)
        if [ "${headers##*$'\n'}" = 200 ] && grep -q "$id" /tmp/read-body; then
          served_by=$(printf '%s\n' "$headers" | tr -d '\r' | sed -n 's/^[Xx]-[Ss]erved-[Bb]y: *//p')
          case "$served_by" in replica*) break ;; esac
        fi
        sleep 0.2
      done
      case "$served_by" in
        replica*) log "wrote product $id through write-api; read-api served it from $served_by" ;;
        *)
          fail "read-api did not serve product $id from a replica within 10s (last: ${headers%%$'\r'*}, x-served-by: ${served_by:-none})"
          run_ok=0
          ;;
      esac
    fi
  fi
else
  tail -n 30 "$OUT/make-run.log"
  if kill -0 "$make_pid" 2>/dev/null; then
    fail "make run was not up after ${READY_TIMEOUT}s"
  else
    fail "make run exited before the stack was up"
  fi
fi

# Ctrl-C, then the three services must be gone and make must have returned.
stop_ok=0
if kill -0 "$make_pid" 2>/dev/null; then
  log "Ctrl-C (SIGINT to make's process group)"
  stop_started=$SECONDS
  kill -INT -- "-$make_pid" 2>/dev/null || true
  while [ $((SECONDS - stop_started)) -lt "$STOP_TIMEOUT" ]; do
    if ! kill -0 "$make_pid" 2>/dev/null && [ -z "$(stack_pids)" ] &&
      ! port_open 8000 && ! port_open 8001 && ! port_open 8002; then
      stop_ok=1
      break
    fi
    sleep 0.5
  done
  stop_seconds=$((SECONDS - stop_started))
  make_status=0
  if [ "$stop_ok" = 1 ]; then
    wait "$make_pid" || make_status=$?
    log "stopped in ${stop_seconds}s (make exited with $make_status)"
  else
    fail "after Ctrl-C, still running ${STOP_TIMEOUT}s later: make=$(kill -0 "$make_pid" 2>/dev/null && echo yes || echo no), services: $(stack_pids | tr '\n' ' ')"
    # shellcheck disable=SC2046 # one pid a word
    kill -TERM $(stack_pids) 2>/dev/null || true
    kill -KILL -- "-$make_pid" 2>/dev/null || true
  fi
fi
# Let the stamper write the last lines.
sleep 1

record "setup (apt rust+git, clone)" "${setup_seconds}s"
record "apt-get install make" "${make_seconds}s"
if [ "$ready" = 1 ]; then
  record "make run until ready" "${run_seconds}s (release build ${build_seconds:-?}s)"
else
  record "make run until ready" "NOT READY after ${run_seconds}s"
fi
record "write, then read from a replica" "$([ "$run_ok" = 1 ] && echo "ok (x-served-by: $served_by)" || echo FAILED)"
record "Ctrl-C stops the stack" "$([ "$stop_ok" = 1 ] && echo "ok in ${stop_seconds}s (make exit status $make_status)" || echo FAILED)"
# `make stop` needs pgrep and pkill; minbase Debian has neither until a package pulls procps.
missing_tools=$(for t in pgrep pkill; do command -v "$t" >/dev/null || printf '%s ' "$t"; done)
record "make stop's pgrep/pkill present" "$([ -z "$missing_tools" ] && echo yes || echo "NO, missing: $missing_tools")"

# ---------------------------------------------------------------------------------------
if [ "$RUN_TESTS" = 1 ]; then
  log "make test (its output in make-test.log; this takes long)"
  started=$SECONDS
  set +e
  timeout --signal=INT --kill-after=60 "$TEST_TIMEOUT" make test 2>&1 | stamp >"$OUT/make-test.log"
  test_status=${PIPESTATUS[0]}
  set -e
  test_seconds=$((SECONDS - started))
  log "make test exited with $test_status after ${test_seconds}s"
  if [ "$test_status" = 0 ]; then
    record "make test" "passed in ${test_seconds}s"
  else
    [ "$test_status" = 124 ] && note=" (stopped by the ${TEST_TIMEOUT}s timeout)" || note=
    record "make test" "FAILED (exit $test_status) in ${test_seconds}s$note"
    fail "make test (exit $test_status)"
  fi
  {
    echo
    echo "make test, result of each test binary:"
    awk '
      / Running .*\(.*\)$/ {
        line = $0; sub(/^\[ *[0-9]+s\] +Running /, "", line)
        bin = line; sub(/^.*\//, "", bin); sub(/\)$/, "", bin); sub(/-[0-9a-f]+$/, "", bin)
        src = line; sub(/ \(.*$/, "", src)
        # Integration tests are named by their file only: add the package, from the unit
        # tests cargo ran just before them (cargo runs a package'"'"'s unit tests first).
        if (src ~ /^unittests /) package = bin
        running = (src ~ /^unittests / ? bin : package ": " bin) " (" src ")"
      }
      / Doc-tests / { running = $0; sub(/^.*Doc-tests /, "", running); running = running " (doc-tests)" }
      /test result:/ { line = $0; sub(/^.*test result: /, "", line); printf "  %-48s %s\n", running, line }
    ' "$OUT/make-test.log"
    if grep -qE ' \.\.\. FAILED$|panicked at|^\[ *[0-9]+s\] (error|make: \*\*\*)' "$OUT/make-test.log"; then
      echo
      echo "make test, failed tests:"
      grep -E ' \.\.\. FAILED$' "$OUT/make-test.log" | sed 's/^\[ *[0-9]*s\] /  /' | sort -u | head -n 40 || true
      echo
      echo "make test, panics (the first 20, with the two lines after each):"
      grep -E -A2 'panicked at' "$OUT/make-test.log" | grep -v '^--$' | head -n 60 | sed 's/^/  /' || true
      echo
      echo "make test, errors:"
      grep -E '^\[ *[0-9]+s\] (error|make: \*\*\*)' "$OUT/make-test.log" | head -n 20 | sed 's/^/  /' || true
    fi
  } >>"$SUMMARY"
else
  record "make test" "skipped"
fi

if [ ${#FAILURES[@]} -gt 0 ]; then
  { echo; echo "failed steps:"; printf '  %s\n' "${FAILURES[@]}"; } >>"$SUMMARY"
  exit 1
fi
exit 0
