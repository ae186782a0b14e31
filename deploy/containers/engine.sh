#!/usr/bin/env bash
# Makes a container engine usable on this machine, for the scripts under deploy/containers/
# (and `make test-fresh`). Where a Docker engine answers, it is used unchanged. Otherwise
# podman and docker-compose are installed from Debian's packages when missing (needs root),
# and podman is given the project's own configuration under a state directory, so its
# storage, run files and networks stay out of the system's default paths:
#
#   $CATALOGUE_CONTAINERS_DIR (default /var/tmp/catalogue-containers)
#     containers.conf  storage.conf  registries.conf   written on every setup
#     storage/ run/ networks/                         podman's images, containers, networks
#     compose/                                        the Docker-API socket for docker-compose
#
# Source it (`. deploy/containers/engine.sh`): that sets up the engine and exports
#   ENGINE          the command to run: docker or podman
#   ENGINE_KIND     docker | podman
#   CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, CONTAINERS_REGISTRIES_CONF   (podman only)
# and defines the helpers below (engine_image_exists, engine_compose_env, ...).
# Run it instead to set up and print the `export` lines for a shell:
#   eval "$(deploy/containers/engine.sh)"

# Installed without their recommendations: docker-compose recommends docker.io, a whole
# Docker engine (with containerd) that would sit there unused, and podman recommends buildah.
# netavark, aardvark-dns and iptables are named because without recommendations apt would
# pick the older CNI plugins for container networking.
ENGINE_PACKAGES=(podman runc netavark aardvark-dns iptables slirp4netns passt fuse-overlayfs uidmap
  catatonit debootstrap docker-compose)

: "${CATALOGUE_CONTAINERS_DIR:=/var/tmp/catalogue-containers}"

engine_log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
engine_die() { printf 'error: %s\n' "$*" >&2; return 1; }

engine_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# True when a Docker engine (not only the docker client) answers.
engine_docker_answers() {
  command -v docker >/dev/null 2>&1 || return 1
  # Our own podman socket would answer too: that is not a Docker engine.
  case "${DOCKER_HOST:-}" in *"$CATALOGUE_CONTAINERS_DIR"*) return 1 ;; esac
  timeout 10 docker info >/dev/null 2>&1
}

engine_install_podman() {
  local missing=() package
  for package in "${ENGINE_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$package")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  command -v apt-get >/dev/null || engine_die "no Docker engine and no apt-get to install podman: install podman and docker-compose yourself" || return 1
  engine_log "no Docker engine answers: installing ${missing[*]} from Debian's packages"
  engine_as_root apt-get update -q -o DPkg::Lock::Timeout=600
  engine_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}"
}

# Podman 4.3 from Debian needs these on this kind of machine: crun 1.8 fails with "cgroups in
# hybrid mode not supported" (so runc), there is no systemd (so cgroupfs and a file events
# log), and the VM may refuse to raise limits in a container (so set them, not inherit them).
engine_write_podman_config() {
  local dir=$CATALOGUE_CONTAINERS_DIR
  engine_as_root mkdir -p "$dir/storage" "$dir/run" "$dir/networks" "$dir/compose"
  engine_as_root tee "$dir/containers.conf" >/dev/null <<EOF
# Written by deploy/containers/engine.sh; rewritten on every setup.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_config_dir = "$dir/networks"
EOF
  engine_as_root tee "$dir/storage.conf" >/dev/null <<EOF
# Written by deploy/containers/engine.sh; rewritten on every setup.
[storage]
driver = "overlay"
graphroot = "$dir/storage"
runroot = "$dir/run"
EOF
  # The compose file names images by short names (postgres:16); resolve them as Docker does.
  engine_as_root tee "$dir/registries.conf" >/dev/null <<EOF
# Written by deploy/containers/engine.sh; rewritten on every setup.
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
}

engine_setup() {
  if engine_docker_answers; then
    ENGINE=docker ENGINE_KIND=docker
    export ENGINE ENGINE_KIND
    return 0
  fi
  engine_install_podman || return 1
  engine_write_podman_config || return 1
  CONTAINERS_CONF=$CATALOGUE_CONTAINERS_DIR/containers.conf
  CONTAINERS_STORAGE_CONF=$CATALOGUE_CONTAINERS_DIR/storage.conf
  CONTAINERS_REGISTRIES_CONF=$CATALOGUE_CONTAINERS_DIR/registries.conf
  ENGINE=podman ENGINE_KIND=podman
  export CONTAINERS_CONF CONTAINERS_STORAGE_CONF CONTAINERS_REGISTRIES_CONF ENGINE ENGINE_KIND
  [ "$(id -u)" -eq 0 ] || engine_log "podman runs rootless here; this setup was only tried as root"
}

# True when the image is present locally.
engine_image_exists() {
  "$ENGINE" image inspect "$1" >/dev/null 2>&1
}

# Tries to pull an image within $2 seconds (default 60). Quiet; the reason of a failure is in
# $ENGINE_PULL_ERROR.
engine_try_pull() {
  local image=$1 seconds=${2:-60} out
  if out=$(timeout "$seconds" "$ENGINE" pull -q "$image" 2>&1); then
    ENGINE_PULL_ERROR=
    return 0
  fi
  ENGINE_PULL_ERROR=$(printf '%s\n' "$out" | tail -n 1)
  [ -n "$ENGINE_PULL_ERROR" ] || ENGINE_PULL_ERROR="no answer within ${seconds}s"
  return 1
}

# For docker-compose: with a Docker engine, nothing to do. With podman, starts (once) podman's
# Docker-compatible API on a socket under the state directory and exports DOCKER_HOST, plus
# COMPOSE_CMD, the compose command to use. docker-compose 1.29 refuses the compose file's
# top-level `name:` key: pass `-p NAME` (or COMPOSE_PROJECT_NAME).
engine_compose_env() {
  if [ "$ENGINE_KIND" = docker ]; then
    if docker compose version >/dev/null 2>&1; then COMPOSE_CMD="docker compose"; else COMPOSE_CMD=docker-compose; fi
    export COMPOSE_CMD
    return 0
  fi
  local dir=$CATALOGUE_CONTAINERS_DIR/compose
  local socket=$dir/podman.sock pidfile=$dir/service.pid
  if ! { [ -S "$socket" ] && [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
    engine_as_root rm -f "$socket"
    engine_log "starting podman's Docker-compatible API on $socket"
    # Its own stdio, so it does not hold the caller's output (a pipe) open after the caller ends.
    # Image builds run inside it, so it runs at nice ENGINE_NICE (default 10): a long build
    # leaves the machine's other work its share of the CPU.
    nice -n "${ENGINE_NICE:-10}" podman system service --time=0 "unix://$socket" </dev/null >"$dir/service.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.2; done
    [ -S "$socket" ] || engine_die "podman system service did not open $socket; see $dir/service.log" || return 1
  fi
  DOCKER_HOST=unix://$socket COMPOSE_CMD=docker-compose
  export DOCKER_HOST COMPOSE_CMD
}

# Without systemd podman never runs HEALTHCHECKs by itself, so `depends_on: service_healthy`
# would wait for ever. This starts (once) a background loop that runs every running
# container's health check every 2 s. No-op with Docker.
engine_healthchecks_start() {
  [ "$ENGINE_KIND" = podman ] || return 0
  local pidfile=$CATALOGUE_CONTAINERS_DIR/compose/healthchecks.pid
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && return 0
  (
    while sleep 2; do
      # A container without a health check just makes `healthcheck run` fail.
      for id in $(podman ps -q 2>/dev/null); do
        podman healthcheck run "$id" >/dev/null 2>&1 || true
      done
    done
  ) </dev/null >/dev/null 2>&1 &
  echo $! >"$pidfile"
}

# Stops what engine_compose_env and engine_healthchecks_start started (by their pid files).
engine_helpers_stop() {
  local pidfile
  for pidfile in "$CATALOGUE_CONTAINERS_DIR/compose/healthchecks.pid" "$CATALOGUE_CONTAINERS_DIR/compose/service.pid"; do
    [ -f "$pidfile" ] || continue
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  # Run, not sourced: set up and print the variables for `eval`.
  set -euo pipefail
  engine_setup
  for variable in ENGINE ENGINE_KIND CONTAINERS_CONF CONTAINERS_STORAGE_CONF CONTAINERS_REGISTRIES_CONF; do
    if [ -n "${!variable:-}" ]; then printf 'export %s=%q\n' "$variable" "${!variable}"; fi
  done
else
  engine_setup
fi
