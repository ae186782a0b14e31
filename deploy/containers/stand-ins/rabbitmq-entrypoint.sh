#!/usr/bin/env bash
# Entry point of the stand-in rabbitmq image (stand-in-images.sh builds it where no image
# registry answers). It does the part of the official image's entry point that this project
# uses:
#
#   docker-entrypoint.sh rabbitmq-server    (the image's default command)
#   docker-entrypoint.sh OTHER COMMAND...   runs that command as it is
#
# RABBITMQ_DEFAULT_USER, RABBITMQ_DEFAULT_PASS and RABBITMQ_DEFAULT_VHOST become the node's
# default user (an administrator, with every permission on that vhost) and vhost when it first
# starts, as in the official image; without them, guest/guest and "/". Listeners: AMQP on 5672,
# the management UI on 15672, on every interface; logs on standard output. The node's data
# (/var/lib/rabbitmq) belongs to the rabbitmq user, which runs the server.
set -euo pipefail

if [ "${1:-}" != rabbitmq-server ]; then
  exec "$@"
fi

if [ "$(id -u)" -eq 0 ]; then
  {
    echo "# Written by the stand-in image's entry point on every start."
    echo "listeners.tcp.default = 5672"
    echo "management.tcp.port = 15672"
    echo "loopback_users = none"
    echo "log.console = true"
    echo "log.file = false"
    if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then
      echo "default_user = $RABBITMQ_DEFAULT_USER"
      echo "default_user_tags.administrator = true"
    fi
    [ -z "${RABBITMQ_DEFAULT_PASS:-}" ] || echo "default_pass = $RABBITMQ_DEFAULT_PASS"
    [ -z "${RABBITMQ_DEFAULT_VHOST:-}" ] || echo "default_vhost = $RABBITMQ_DEFAULT_VHOST"
  } >/etc/rabbitmq/rabbitmq.conf
  chmod 640 /etc/rabbitmq/rabbitmq.conf
  chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq /etc/rabbitmq
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$0" "$@"
fi

exec /usr/lib/rabbitmq/bin/rabbitmq-server
