#!/usr/bin/env bash
# Start, stop and describe the Redis and PostgreSQL servers the runtime's store and pool tests
# run against. Both listen on 127.0.0.1 only, on non-default ports, with their data in a
# throw-away state directory, so they never collide with a server the machine already runs.
#
#   scripts/services.sh up     install (when missing) and start both servers; idempotent
#   scripts/services.sh env    print `export REDIS_URL=... DATABASE_URL=...` for `eval`
#   scripts/services.sh down   stop both servers (the state directory is kept)
#
# Tests read REDIS_URL and DATABASE_URL; a test whose server is not configured prints that it
# was skipped and why. Typical use:
#
#   scripts/services.sh up && eval "$(scripts/services.sh env)" && cargo test -p agent-runtime
#
# Settings (environment):
#   FASTAGENTIC_SERVICES_DIR  state directory (default /tmp/fastagentic-services)
#   FASTAGENTIC_REDIS_PORT    Redis port (default 16379)
#   FASTAGENTIC_PG_PORT       PostgreSQL port (default 15432)
set -euo pipefail

STATE_DIR="${FASTAGENTIC_SERVICES_DIR:-/tmp/fastagentic-services}"
REDIS_PORT="${FASTAGENTIC_REDIS_PORT:-16379}"
PG_PORT="${FASTAGENTIC_PG_PORT:-15432}"
PG_BIN="/usr/lib/postgresql/15/bin"
PG_USER="fastagentic"
PG_PASSWORD="fastagentic"
PG_DATABASE="fastagentic"
HOST="127.0.0.1"

REDIS_DIR="${STATE_DIR}/redis"
PG_DATA="${STATE_DIR}/pgdata"
PG_LOG="${STATE_DIR}/postgres.log"
PG_SOCKET_DIR="${STATE_DIR}/pgsocket"

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The servers refuse to run as root (PostgreSQL) or should not (Redis); both run as `postgres`
# or `redis` when we are root, as ourselves otherwise.
as_user() {
    local user="$1"
    shift
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$user" -- "$@"
    else
        "$@"
    fi
}

install_missing() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    [ -x "${PG_BIN}/initdb" ] || missing+=(postgresql)
    command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
    if [ "${#missing[@]}" -eq 0 ]; then
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; install them (apt-get install -y ${missing[*]}) or run as root"
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    [ -x "${PG_BIN}/initdb" ] || die "PostgreSQL 15 was installed but ${PG_BIN}/initdb is missing"
}

server_user() {
    local wanted="$1"
    if [ "$(id -u)" -eq 0 ]; then
        id "$wanted" >/dev/null 2>&1 || die "user ${wanted} does not exist (the Debian package creates it)"
        printf '%s' "$wanted"
    else
        id -un
    fi
}

redis_cli() { redis-cli -h "$HOST" -p "$REDIS_PORT" "$@"; }

redis_up() {
    if redis_cli ping >/dev/null 2>&1; then
        log "redis already answering on ${HOST}:${REDIS_PORT}"
        return
    fi
    local user
    user="$(server_user redis)"
    mkdir -p "$REDIS_DIR"
    chown "$user" "$REDIS_DIR"
    as_user "$user" redis-server \
        --bind "$HOST" --port "$REDIS_PORT" --protected-mode yes \
        --dir "$REDIS_DIR" --save '' --appendonly no \
        --daemonize yes --pidfile "${REDIS_DIR}/redis.pid" --logfile "${REDIS_DIR}/redis.log"
    for _ in $(seq 1 50); do
        if redis_cli ping >/dev/null 2>&1; then
            log "redis up on ${HOST}:${REDIS_PORT}"
            return
        fi
        sleep 0.1
    done
    die "redis did not answer on ${HOST}:${REDIS_PORT}; see ${REDIS_DIR}/redis.log"
}

redis_down() {
    if redis_cli ping >/dev/null 2>&1; then
        redis_cli shutdown nosave >/dev/null 2>&1 || true
        log "redis stopped"
    else
        log "redis not running on ${HOST}:${REDIS_PORT}"
    fi
}

pg_ready() { "${PG_BIN}/pg_isready" -q -h "$HOST" -p "$PG_PORT"; }

psql_admin() {
    as_user "$1" env PGOPTIONS="-c client_min_messages=warning" "${PG_BIN}/psql" -v ON_ERROR_STOP=1 -q -h "$PG_SOCKET_DIR" -p "$PG_PORT" -d postgres "${@:2}"
}

pg_up() {
    local user
    user="$(server_user postgres)"
    mkdir -p "$STATE_DIR"
    if [ ! -s "${PG_DATA}/PG_VERSION" ]; then
        mkdir -p "$PG_DATA"
        chown "$user" "$PG_DATA"
        chmod 700 "$PG_DATA"
        log "initdb in ${PG_DATA}"
        as_user "$user" "${PG_BIN}/initdb" -D "$PG_DATA" -U "$user" --auth-local=trust \
            --auth-host=scram-sha-256 --encoding=UTF8 --no-instructions >/dev/null
    fi
    mkdir -p "$PG_SOCKET_DIR"
    chown "$user" "$PG_SOCKET_DIR"
    touch "$PG_LOG"
    chown "$user" "$PG_LOG"
    if ! pg_ready; then
        as_user "$user" "${PG_BIN}/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 30 \
            -o "-c listen_addresses=${HOST} -c port=${PG_PORT} -c unix_socket_directories=${PG_SOCKET_DIR} -c max_connections=200" \
            start >/dev/null || die "PostgreSQL did not start; see ${PG_LOG}"
        log "postgres up on ${HOST}:${PG_PORT}"
    else
        log "postgres already answering on ${HOST}:${PG_PORT}"
    fi
    # Role and database are created once; both statements are safe to repeat.
    psql_admin "$user" -U "$user" <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${PG_USER}') THEN
        CREATE ROLE ${PG_USER} LOGIN PASSWORD '${PG_PASSWORD}';
    END IF;
END
\$\$;
SQL
    if [ "$(psql_admin "$user" -U "$user" -tA -c "SELECT 1 FROM pg_database WHERE datname = '${PG_DATABASE}'")" != "1" ]; then
        psql_admin "$user" -U "$user" -c "CREATE DATABASE ${PG_DATABASE} OWNER ${PG_USER}"
    fi
    # The pool tests read pg_stat_activity and call pg_terminate_backend on their own backends;
    # pg_signal_backend lets the test user do that without being a superuser.
    psql_admin "$user" -U "$user" -c "GRANT pg_signal_backend TO ${PG_USER}" >/dev/null
}

pg_down() {
    if [ -s "${PG_DATA}/PG_VERSION" ] && pg_ready; then
        as_user "$(server_user postgres)" "${PG_BIN}/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
        log "postgres stopped"
    else
        log "postgres not running on ${HOST}:${PG_PORT}"
    fi
}

print_env() {
    printf 'export REDIS_URL=%q DATABASE_URL=%q\n' \
        "redis://${HOST}:${REDIS_PORT}/0" \
        "postgres://${PG_USER}:${PG_PASSWORD}@${HOST}:${PG_PORT}/${PG_DATABASE}"
}

main() {
    case "${1:-}" in
        up)
            install_missing
            redis_up
            pg_up
            ;;
        down)
            redis_down
            pg_down
            ;;
        env)
            print_env
            ;;
        *)
            die "usage: $0 up|down|env"
            ;;
    esac
}

main "$@"
