#!/usr/bin/env bash
# `make test-fresh`: do the README's two commands pass on a fresh machine? Starts a fresh
# Debian bookworm container (no systemd; PostgreSQL's default logins, so scram-sha-256 on
# 127.0.0.1), installs only Debian's Rust toolchain and git in it, clones this repository at
# a commit and, as a new user would, runs `make run` (until the stack is up, one write read
# back from a replica, then Ctrl-C) and `make test`, timing each. See
# fresh-machine-inside.sh for the steps inside.
#
#   deploy/containers/fresh-machine.sh [--commit REV] [--keep] [--run-only]
#
#   --commit REV   what to clone (default HEAD). Only committed work is tested: uncommitted
#                  changes in this checkout are not in the clone.
#   --keep         leave the container for a look (podman exec -it NAME bash); else removed
#   --run-only     skip `make test`
#
# Needs root (podman is rootful here), network access to Debian's mirrors and to the Rust
# crates registry from the container. The container engine comes from engine.sh, the Debian
# image from stand-in-images.sh (a local stand-in where no image registry answers).
# Runs at nice 10 (FRESH_NICE) so the machine's other work keeps its share of the CPU.
# Logs and the summary: target/fresh-machine/<time>-<commit>/ (target/fresh-machine/latest).
# Exit status 0 only when every step passed.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel)
IMAGE=docker.io/library/debian:bookworm

REV=HEAD KEEP=0 RUN_TESTS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --commit) REV=${2:?--commit needs a revision}; shift ;;
    --commit=*) REV=${1#--commit=} ;;
    --keep) KEEP=1 ;;
    --run-only) RUN_TESTS=0 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 && !/shellcheck/ { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) printf 'error: unknown argument %s (see --help)\n' "$1" >&2; exit 2 ;;
  esac
  shift
done

[ "$(id -u)" -eq 0 ] || { echo "error: run as root (podman runs rootful here)" >&2; exit 1; }
renice -n "${FRESH_NICE:-10}" -p $$ >/dev/null 2>&1 || true

COMMIT=$(git -C "$ROOT" rev-parse --verify "$REV^{commit}")
SHORT=$(git -C "$ROOT" rev-parse --short "$COMMIT")
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ] && [ "$COMMIT" = "$(git -C "$ROOT" rev-parse HEAD)" ]; then
  printf '\033[1mwarning: this checkout has uncommitted changes; they are not tested (the check clones commit %s)\033[0m\n' "$SHORT" >&2
fi
# The clone reads the repository's object store (shared by all worktrees), mounted read-only.
GIT_DIR_COMMON=$(cd "$ROOT" && cd "$(git rev-parse --git-common-dir)" && pwd)

RUN_DIR=$ROOT/target/fresh-machine/$(date +%Y%m%d-%H%M%S)-$SHORT
mkdir -p "$RUN_DIR"
ln -sfn "$(basename "$RUN_DIR")" "$ROOT/target/fresh-machine/latest"
LOG=$RUN_DIR/fresh-machine.log
exec > >(tee "$LOG") 2>&1

log() { printf '%(%H:%M:%S)T ==> %s\n' -1 "$*"; }
started_all=$SECONDS
log "fresh-machine check of $SHORT ($(git -C "$ROOT" log -1 --format=%s "$COMMIT")); logs in $RUN_DIR"

# shellcheck source=engine.sh
. "$HERE/engine.sh"
started=$SECONDS
"$HERE/stand-in-images.sh" "$IMAGE"
image_seconds=$((SECONDS - started))
image_note=$("$ENGINE" image inspect --format '{{ index .Config.Labels "catalogue.stand-in" }}' "$IMAGE" 2>/dev/null || true)
[ "$image_note" = true ] && image_note="a local stand-in" || image_note="pulled"

NAME=catalogue-fresh-$SHORT-$$
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  if [ "$KEEP" = 1 ]; then
    log "container kept: $ENGINE exec -it $NAME bash   (remove: $ENGINE rm -f $NAME)"
  else
    "$ENGINE" rm -f -t 5 "$NAME" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# --init: a PID 1 that reaps, as on a machine (PostgreSQL and RabbitMQ daemonise).
# LANG: a Debian machine's default locale (an image has none), so PostgreSQL's clusters are
# UTF-8 as they would be there. /dev/shm as large as a small machine's.
log "starting a fresh Debian bookworm container ($IMAGE, $image_note)"
"$ENGINE" run -d --name "$NAME" --init --hostname fresh-debian --shm-size 1g \
  -e LANG=C.UTF-8 \
  -e FRESH_RUN_TESTS="$RUN_TESTS" \
  ${FRESH_READY_TIMEOUT:+-e FRESH_READY_TIMEOUT="$FRESH_READY_TIMEOUT"} \
  ${FRESH_TEST_TIMEOUT:+-e FRESH_TEST_TIMEOUT="$FRESH_TEST_TIMEOUT"} \
  -v "$GIT_DIR_COMMON:/src/repo.git:ro" \
  -v "$HERE/fresh-machine-inside.sh:/check/fresh-machine-inside.sh:ro" \
  -v "$RUN_DIR:/out" \
  "$IMAGE" sleep infinity >/dev/null

status=0
"$ENGINE" exec "$NAME" bash /check/fresh-machine-inside.sh "$COMMIT" || status=$?

container_size=$("$ENGINE" ps -a --size --filter "name=^$NAME\$" --format '{{.Size}}' 2>/dev/null || true)
total_seconds=$((SECONDS - started_all))
{
  echo
  echo "=== fresh machine: $SHORT, $(date '+%Y-%m-%d %H:%M') ==="
  printf '%-34s %s\n' "base image:" "${image_seconds}s ($image_note)"
  cat "$RUN_DIR/summary.txt" 2>/dev/null || echo "(no summary: the inside script did not get far)"
  printf '%-34s %s\n' "container disk (written layer):" "${container_size:-?}"
  # -x: not through the container's mounted root, which would count its layers twice.
  printf '%-34s %s\n' "engine state dir (with container):" "$(du -shx "$CATALOGUE_CONTAINERS_DIR" 2>/dev/null | cut -f1) in $CATALOGUE_CONTAINERS_DIR"
  printf '%-34s %s\n' "total:" "${total_seconds}s"
  printf '%-34s %s\n' "result:" "$([ "$status" = 0 ] && echo PASSED || echo FAILED)"
  echo "logs: $RUN_DIR"
} | tee "$RUN_DIR/summary-full.txt"
exit "$status"
