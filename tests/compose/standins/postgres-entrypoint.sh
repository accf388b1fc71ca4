#!/bin/bash
# Entrypoint of the postgres stand-in: honours POSTGRES_PASSWORD (required on first start),
# POSTGRES_USER (default postgres) and POSTGRES_DB (default the user), as the official image does.
set -euo pipefail
PGDATA=${PGDATA:-/var/lib/postgresql/data}
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres stand-in: POSTGRES_PASSWORD is not set (the database would be open)" >&2
        exit 1
    fi
    pw=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" >"$pw"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pw"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    if [ "$db" != postgres ]; then
        quoted=${db//\"/\"\"}
        echo "CREATE DATABASE \"$quoted\"" | postgres --single -D "$PGDATA" -j postgres >/dev/null
    fi
    echo "postgres stand-in: cluster created (user $user, database $db)" >&2
fi
if [ "${1:-}" = postgres ]; then
    shift
    exec postgres -D "$PGDATA" "$@"
fi
exec "$@"
