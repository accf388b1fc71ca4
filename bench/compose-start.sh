#!/usr/bin/env bash
# Cold start of the compose deployment: from `up -d` on empty volumes (images already built) to
# the API answering /readyz and both worker replicas started (browsers up, claiming); then the same after `down` and `up`
# on the kept volumes (warm). Prints the image sizes and both times. Uses its own project name
# and port, and removes its volumes at the end.
#
#   bench/compose-start.sh [SMOOTHD_IMAGE] [SMOOTHD_POSTGRES_IMAGE]
#
# Defaults: smoothd:latest and postgres:16 (on a machine without a registry, pass the images
# tests/compose/images.sh built).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
IMAGE=${1:-smoothd:latest}
PG=${2:-postgres:16}
PORT=${SMOOTHD_BENCH_PORT:-18480}
env_file=$(mktemp)
trap 'rm -f "$env_file"' EXIT
printf 'SMOOTHD_IMAGE=%s\nSMOOTHD_POSTGRES_IMAGE=%s\nSMOOTHD_PUBLISH=127.0.0.1:%s\n' "$IMAGE" "$PG" "$PORT" >"$env_file"
if docker compose version >/dev/null 2>&1; then DC=(docker compose); else DC=(docker-compose); fi
dc() { "${DC[@]}" --env-file "$env_file" -p smoothd-bench -f compose.yaml "$@"; }

ready() {
    curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 || return 1
    local c
    for c in $(dc ps -q worker); do
        # Started its browsers and claims tasks (the health check runs only every 5 s).
        docker logs "$c" 2>&1 | grep -q '"message":"workers started"' || return 1
    done
}

timed_up() {
    local t0 t1
    t0=$(date +%s.%N)
    dc up -d --no-build >/dev/null 2>&1
    until ready; do sleep 0.2; done
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }'
}

docker image inspect -f '{{.RepoTags}} {{.Size}}' "$IMAGE" "$PG" | awk '{printf "%s %.0f MB\n", $1, $2 / 1e6}'
dc down -v >/dev/null 2>&1 || true
echo "cold start (empty volumes): $(timed_up) s"
dc down >/dev/null 2>&1
echo "warm start (kept volumes):  $(timed_up) s"
dc down -v >/dev/null 2>&1
