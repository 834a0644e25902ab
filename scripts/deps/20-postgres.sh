# shellcheck shell=bash
# PostgreSQL for the tests of the SQL Server path: the TDS test server (crates/tds-test-server) runs what
# tiberius sends on a loopback PostgreSQL cluster, whose READ COMMITTED behaves like Azure SQL's default
# (READ_COMMITTED_SNAPSHOT ON). Sourced by scripts/test; also runnable on its own (`bash scripts/deps/20-postgres.sh`).
# Idempotent: installs Debian's postgresql when missing (ICU collations are built in: no contrib needed), starts one cluster on 127.0.0.1 when it is not
# already running, and exports PROCFWK_TEST_POSTGRES (a libpq connection string to a superuser).

procfwk_pg_port="${PROCFWK_PG_PORT:-54329}"
procfwk_pg_data="${PROCFWK_PG_DATA:-/tmp/procfwk-test-pg-$procfwk_pg_port}"

procfwk_pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
        fi
    done | sort -V | tail -n 1
}

procfwk_pg_as() {
    # initdb and postgres refuse to run as root: run them as the `postgres` user when we are root.
    if [ "$(id -u)" = "0" ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

procfwk_pg_setup() {
    local bin
    bin="$(procfwk_pg_bin)"
    if [ -z "$bin" ]; then
        if [ "$(id -u)" != "0" ] || [ -n "${PROCFWK_PG_NO_INSTALL:-}" ]; then
            echo "20-postgres: PostgreSQL is not installed and we are not root: apt-get install postgresql" >&2
            return 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends postgresql >/dev/null || return 1
        bin="$(procfwk_pg_bin)"
    fi
    if [ -z "$bin" ]; then
        echo "20-postgres: no initdb/pg_ctl under /usr/lib/postgresql/*/bin" >&2
        return 1
    fi
    if ! procfwk_pg_as "$bin/pg_isready" -q -h 127.0.0.1 -p "$procfwk_pg_port"; then
        if [ ! -s "$procfwk_pg_data/PG_VERSION" ]; then
            rm -rf "$procfwk_pg_data"
            mkdir -p "$procfwk_pg_data"
            [ "$(id -u)" = "0" ] && chown postgres: "$procfwk_pg_data"
            procfwk_pg_as "$bin/initdb" -D "$procfwk_pg_data" -U postgres --auth=trust \
                --encoding=UTF8 --locale=C.UTF-8 >/dev/null || return 1
        fi
        # Loopback only, no Unix socket directory needed; enough connections for parallel test binaries.
        procfwk_pg_as "$bin/pg_ctl" -D "$procfwk_pg_data" -l "$procfwk_pg_data/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $procfwk_pg_port -c unix_socket_directories='' \
                -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
                -c deadlock_timeout=200ms" start >/dev/null || {
            cat "$procfwk_pg_data/server.log" >&2
            return 1
        }
    fi
    export PROCFWK_TEST_POSTGRES="host=127.0.0.1 port=$procfwk_pg_port user=postgres dbname=postgres"
    # Each test server makes a database named tds_<pid>_…; drop those whose test process is gone.
    local db pid
    for db in $(procfwk_pg_as "$bin/psql" -X -At -h 127.0.0.1 -p "$procfwk_pg_port" -U postgres -d postgres \
            -c "SELECT datname FROM pg_database WHERE datname LIKE 'tds\_%'" 2>/dev/null); do
        pid="${db#tds_}"
        pid="${pid%%_*}"
        if [ -n "$pid" ] && [ ! -e "/proc/$pid" ]; then
            procfwk_pg_as "$bin/psql" -X -q -h 127.0.0.1 -p "$procfwk_pg_port" -U postgres -d postgres \
                -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
        fi
    done
    echo "20-postgres: PostgreSQL ready at 127.0.0.1:$procfwk_pg_port (PROCFWK_TEST_POSTGRES)"
}

procfwk_pg_setup || { echo "20-postgres: PostgreSQL could not be started" >&2; return 1 2>/dev/null || exit 1; }
