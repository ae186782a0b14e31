#!/usr/bin/env bash
# Makes base images available to the container engine (see engine.sh):
#
#   deploy/containers/stand-in-images.sh [--force] [IMAGE...]     (default: debian:bookworm)
#
# An image already present is kept (--force rebuilds a stand-in). A missing one is pulled;
# when no image registry answers, a stand-in is built locally instead, under the same name
# (docker.io/library/NAME:TAG) and labelled catalogue.stand-in=true, and the script says so
# on stderr. Stand-ins are built from Debian's packages only:
#
#   debian:bookworm       debootstrap --variant=minbase from the mirror in this machine's apt
#                         sources, set up like the official image (apt sources for bookworm,
#                         -updates and -security; services not started by package scripts)
#   debian:bookworm-slim  the same image under the second name
#   rust:1.90-slim-bookworm   the stand-in Debian with Debian's rustc-web and cargo-web (from
#                         bookworm-security: a newer Rust than the tag says, 1.96 when written),
#                         gcc and libc6-dev, CARGO_HOME=/usr/local/cargo on PATH as in the
#                         official image
#   postgres:15           Debian's PostgreSQL 15 with stand-ins/postgres-entrypoint.sh, which
#                         honours the official image's POSTGRES_USER, POSTGRES_PASSWORD,
#                         POSTGRES_DB, PGDATA and /docker-entrypoint-initdb.d/
#   rabbitmq:3.13-management  Debian's RabbitMQ with the management plugin and
#                         stand-ins/rabbitmq-entrypoint.sh (RABBITMQ_DEFAULT_USER, _PASS, _VHOST).
#                         It carries Debian bookworm's RabbitMQ, 3.10.8, NOT 3.13: said on
#                         every build, and in the image's label catalogue.stand-in.carries
#
# The stand-in Debian also carries this machine's extra CA certificates
# (/usr/local/share/ca-certificates/*.crt): where HTTPS leaving a container is intercepted by a
# proxy, that is what lets apt's, git's and cargo's HTTPS work. Like the official image it has
# no ca-certificates package; installing that package (git and curl recommend it) adds them to
# the trust store. This is the only place where the project trusts the machine's CAs.
#
# Any other image has no stand-in: asking for one fails with a clear message. Add a
# stand_in_NAME function and a line in stand_in_recipe to add one.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=engine.sh
. "$HERE/engine.sh"

log() { engine_log "$@"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

FORCE=0
IMAGES=()
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 && !/shellcheck/ { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    -*) die "unknown option $arg (see --help)" ;;
    *) IMAGES+=("$arg") ;;
  esac
done
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(debian:bookworm)

# docker.io/library/debian:bookworm for debian:bookworm; other names unchanged.
qualified() {
  case "$1" in
    */*/*) echo "$1" ;;
    */*) echo "docker.io/$1" ;;
    *) echo "docker.io/library/$1" ;;
  esac
}

# The function that builds a stand-in for an image, or nothing.
stand_in_recipe() {
  case "$(qualified "$1")" in
    docker.io/library/debian:bookworm) echo stand_in_debian_bookworm ;;
    docker.io/library/debian:bookworm-slim) echo stand_in_debian_bookworm_slim ;;
    docker.io/library/rust:1.90-slim-bookworm) echo stand_in_rust ;;
    docker.io/library/postgres:15) echo stand_in_postgres ;;
    docker.io/library/rabbitmq:3.13-management) echo stand_in_rabbitmq ;;
    *) echo "" ;;
  esac
}

# The first URI of an apt source on this machine that serves suite $1 (component main), from
# deb822 .sources files and one-line .list files.
host_apt_mirror() {
  local suite=$1 files=() file
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] && files+=("$file")
  done
  [ ${#files[@]} -gt 0 ] || return 0
  awk -v suite="$suite" '
    function has(list, word,   n, i, parts) {
      n = split(list, parts, /[ \t]+/)
      for (i = 1; i <= n; i++) if (parts[i] == word) return 1
      return 0
    }
    function flush() {
      if (types != "" && has(types, "deb") && has(suites, suite) && has(comps, "main") && uris != "") {
        split(uris, u, /[ \t]+/); print u[1]; found = 1; exit
      }
      types = suites = comps = uris = ""
    }
    FNR == 1 { flush() }
    FILENAME ~ /\.sources$/ {
      if ($0 ~ /^[ \t]*$/) { flush(); next }
      if ($0 ~ /^#/) next
      key = tolower($1); sub(/:$/, "", key); value = $0; sub(/^[^:]*:[ \t]*/, "", value)
      if (key == "types") types = value
      else if (key == "uris") uris = value
      else if (key == "suites") suites = value
      else if (key == "components") comps = value
      else if (key == "enabled" && tolower(value) == "no") types = "disabled"
      next
    }
    FILENAME !~ /\.sources$/ && $1 == "deb" {
      i = 2
      if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) == suite) for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; found = 1; exit }
    }
    END { if (!found) flush() }
  ' "${files[@]}" | head -n 1
}

MIRROR=${DEBIAN_MIRROR:-$(host_apt_mirror bookworm)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-$(host_apt_mirror bookworm-security)}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}

stand_in_debian_bookworm() {
  local image=$1 rootfs
  command -v debootstrap >/dev/null || die "debootstrap is missing (engine.sh installs it with podman)"
  rootfs=$CATALOGUE_CONTAINERS_DIR/build/debian-bookworm
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  log "debootstrap --variant=minbase bookworm from $MIRROR (about a minute)"
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 ||
    die "debootstrap failed; see $rootfs.log"

  # The official image's apt sources (deb822), from this machine's mirrors.
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # As in the official image: package scripts do not start services (there is no init),
  # and apt keeps no downloaded packages.
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod 755 "$rootfs/usr/sbin/policy-rc.d"
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"

  # This machine's extra CAs, where Debian's ca-certificates package will pick them up.
  local certs=(/usr/local/share/ca-certificates/*.crt)
  if [ -e "${certs[0]}" ]; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp "${certs[@]}" "$rootfs/usr/local/share/ca-certificates/"
    log "added this machine's CA certificates: ${certs[*]##*/}"
  fi

  # No package lists, caches or host files in the image.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs/debootstrap"
  : >"$rootfs/etc/resolv.conf"
  echo localhost >"$rootfs/etc/hostname"

  tar --numeric-owner -C "$rootfs" -c . |
    "$ENGINE" import --quiet \
      --change 'CMD ["bash"]' \
      --change 'LABEL catalogue.stand-in=true' \
      --change 'LABEL catalogue.stand-in.source=debootstrap-minbase-bookworm' \
      - "$image" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
}

stand_in_debian_bookworm_slim() {
  local image=$1 base=docker.io/library/debian:bookworm
  ensure_image "$base"
  "$ENGINE" tag "$base" "$image"
}

# Builds image $1 from the Containerfile on standard input, on the stand-in Debian, with
# stand-ins/ as the context, labelled as a stand-in that carries $2.
stand_in_build() {
  local image=$1 carries=$2 file
  ensure_image docker.io/library/debian:bookworm
  mkdir -p "$CATALOGUE_CONTAINERS_DIR/build"
  file=$(mktemp "$CATALOGUE_CONTAINERS_DIR/build/Containerfile.XXXXXX")
  cat >"$file"
  "$ENGINE" build --quiet --file "$file" --tag "$image" \
    --label catalogue.stand-in=true --label "catalogue.stand-in.carries=$carries" \
    "$HERE/stand-ins" >"$file.log" 2>&1 || {
    tail -n 30 "$file.log" >&2
    rm -f "$file"
    die "building the stand-in $image failed; see $file.log"
  }
  rm -f "$file" "$file.log"
}

# The version of Debian package $2 in image $1.
package_version() {
  # shellcheck disable=SC2016 # dpkg-query's format
  "$ENGINE" run --rm --entrypoint dpkg-query "$1" -W -f '${Version}' "$2"
}

stand_in_rust() {
  local image=$1
  stand_in_build "$image" "Debian's rustc-web and cargo-web" <<'EOF'
FROM docker.io/library/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev make pkg-config \
      rustc-web cargo-web \
 && rm -rf /var/lib/apt/lists/*
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /usr/local/cargo/bin && rustc --version && cargo --version
EOF
  log "stand-in $image carries Debian's Rust $(package_version "$image" rustc-web) (the tag says 1.90)"
}

stand_in_postgres() {
  local image=$1
  stand_in_build "$image" "Debian bookworm's PostgreSQL 15" <<'EOF'
FROM docker.io/library/debian:bookworm
# The package would create and start a cluster "main": drop it, the entry point makes its own.
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && { pg_dropcluster 15 main 2>/dev/null || true; } \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /docker-entrypoint-initdb.d \
 && chown postgres:postgres /var/lib/postgresql/data && chmod 700 /var/lib/postgresql/data
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
EOF
  log "stand-in $image carries Debian's PostgreSQL $(package_version "$image" postgresql-15)"
}

stand_in_rabbitmq() {
  local image=$1 version
  stand_in_build "$image" "Debian bookworm's RabbitMQ 3.10, not 3.13" <<'EOF'
FROM docker.io/library/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* \
 && rabbitmq-plugins enable --offline rabbitmq_management
# HOME: rabbitmq-diagnostics run as root (a health check) finds the node's Erlang cookie.
ENV HOME=/var/lib/rabbitmq LANG=C.UTF-8
COPY rabbitmq-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/rabbitmq
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 5672 15672
CMD ["rabbitmq-server"]
EOF
  version=$(package_version "$image" rabbitmq-server)
  log "NOTE: stand-in $image carries Debian's RabbitMQ $version, NOT 3.13 (Debian bookworm has no 3.13)"
}

REGISTRY=unknown # unknown | yes | no, found by the first pull
REGISTRY_ERROR=

# Makes $1 present: kept, pulled or built.
ensure_image() {
  local image recipe started
  image=$(qualified "$1")
  recipe=$(stand_in_recipe "$image")
  if engine_image_exists "$image"; then
    if [ "$FORCE" = 1 ] && [ -n "$recipe" ] &&
      [ "$("$ENGINE" image inspect --format '{{ index .Config.Labels "catalogue.stand-in" }}' "$image" 2>/dev/null)" = true ]; then
      "$ENGINE" rmi -f "$image" >/dev/null
    else
      return 0
    fi
  fi
  if [ "$REGISTRY" != no ]; then
    if engine_try_pull "$image" 120; then
      REGISTRY=yes
      log "pulled $image"
      return 0
    fi
    REGISTRY=no REGISTRY_ERROR=$ENGINE_PULL_ERROR
    log "no image registry answers (pulling $image failed: $REGISTRY_ERROR)"
    log "so stand-in images are built locally from Debian's packages, under the names the files use"
  fi
  [ -n "$recipe" ] || die "no registry for $image and no stand-in for it yet: add one in $0"
  log "building a stand-in for $image"
  started=$SECONDS
  "$recipe" "$image"
  log "built stand-in $image in $((SECONDS - started)) s"
}

# Two runs at once (two worktrees) would build the same image twice.
mkdir -p "$CATALOGUE_CONTAINERS_DIR"
exec 9>"$CATALOGUE_CONTAINERS_DIR/stand-in-images.lock"
flock 9

for image in "${IMAGES[@]}"; do
  ensure_image "$image"
done
