#!/usr/bin/env bash
# Make sure Redis (127.0.0.1:6379) and MariaDB (127.0.0.1:3306) are up.
# Idempotent: a running service is left alone, a stopped one is started, a
# missing one is installed from Debian's packages first.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }

wait_for() {  # wait_for NAME COMMAND... : poll until COMMAND succeeds, 30 s at most
  local name=$1; shift
  for _ in $(seq 1 150); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "$name did not come up within 30 s"; return 1
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
mariadb_up() { mariadb -h 127.0.0.1 -P 3306 -uroot -e 'SELECT 1' >/dev/null 2>&1; }

ensure_redis() {
  redis_up && return 0
  command -v redis-server >/dev/null || apt_install redis-server redis-tools
  log "starting redis-server"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/easeoff.log
  wait_for redis redis_up
}

ensure_mariadb() {
  mariadb_up && return 0
  local fresh=0
  if ! command -v mariadbd >/dev/null; then
    apt_install mariadb-server mariadb-client
    fresh=1
  fi
  if ! mariadb -uroot -e 'SELECT 1' >/dev/null 2>&1; then
    log "starting mariadbd"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    wait_for mariadb mariadb -uroot -e 'SELECT 1'
  fi
  if ! mariadb_up; then
    # A fresh Debian install authenticates root@localhost by unix socket only;
    # the dev machines (and easeoff's defaults) use root without a password over TCP.
    [ "$fresh" = 1 ] || log "root cannot log in over TCP; allowing passwordless root on localhost"
    mariadb -uroot -e "ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
      CREATE USER IF NOT EXISTS root@'127.0.0.1' IDENTIFIED BY '';
      GRANT ALL ON *.* TO root@'127.0.0.1' WITH GRANT OPTION;"
    wait_for "mariadb over TCP" mariadb_up
  fi
}

ensure_redis
ensure_mariadb
log "redis 127.0.0.1:6379 and mariadb 127.0.0.1:3306 are up"
