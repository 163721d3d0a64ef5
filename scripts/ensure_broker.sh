#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers at RABBITMQ_URL (default localhost:5672):
# use it if it answers; else start a local rabbitmq-server; else
# `docker compose up -d rabbitmq`; else say exactly what to install.
set -euo pipefail

url="${RABBITMQ_URL:-amqp://guest:guest@localhost:5672/%2F}"
url="${url%%,*}"                       # a cluster list: the first address will do
hostport="${url#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
host="${hostport%%:*}"; port="${hostport##*:}"
[ "$port" = "$hostport" ] && port=5672

answers() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

wait_for_broker() {
  for _ in $(seq 1 60); do
    answers && return 0
    sleep 1
  done
  return 1
}

if answers; then
  exit 0
fi
echo "no broker answers at $host:$port; starting one" >&2

if command -v rabbitmq-server >/dev/null 2>&1 && [[ "$host" == localhost || "$host" == 127.* ]]; then
  rabbitmq-server -detached >/dev/null 2>&1 || true
  if wait_for_broker; then
    command -v rabbitmqctl >/dev/null 2>&1 && rabbitmqctl -q await_startup >/dev/null 2>&1 || true
    echo "started a local rabbitmq-server" >&2
    exit 0
  fi
fi

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  docker compose up -d rabbitmq
  if wait_for_broker; then
    echo "started rabbitmq with docker compose" >&2
    exit 0
  fi
fi

cat >&2 <<MSG
error: no RabbitMQ broker at $host:$port, and none could be started here.
Install one of:
  - RabbitMQ:  sudo apt-get install rabbitmq-server   (then: sudo rabbitmq-server -detached)
  - Docker:    https://docs.docker.com/engine/install/ (then: docker compose up -d rabbitmq)
or point RABBITMQ_URL at a broker that runs elsewhere.
MSG
exit 1
