#!/usr/bin/env bash
# Builds the images the compose test runs, on an engine that cannot pull: local stand-ins for
# the three base images compose.yaml and docker/Dockerfile name (debian:bookworm-slim,
# rust:1-bookworm, postgres:16), made from Debian packages, then the smoothd image from
# docker/Dockerfile with those stand-ins as its build arguments.
#
#   tests/compose/images.sh            build what is missing; print KEY=VALUE lines on stdout
#
# Stand-ins are tagged by a hash of their recipe (this script, standins/, and for the builder
# the Rust toolchain and Cargo.lock) and reused while present. The smoothd image reuses the
# engine's layer cache: a source change rebuilds only the workspace's crates.
#
# Environment:
#   SMOOTHD_TEST_DEBIAN_MIRROR  Debian mirror for debootstrap (default: the first one apt uses)
#   SMOOTHD_TEST_PROFILE        cargo profile of the smoothd image (default dev: faster to build)
# Progress goes to stderr; exits 3 (printing why) when no Docker engine answers.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RECIPES="$HERE/standins"
PROFILE=${SMOOTHD_TEST_PROFILE:-dev}

log() { printf 'images.sh: %s\n' "$*" >&2; }

if ! docker info >/dev/null 2>&1; then
    log "no Docker engine answers (docker info failed)"
    exit 3
fi

hash_of() { sha256sum | cut -c1-16; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
elapsed() { echo $(($(date +%s) - $1)); }

mirror() {
    if [ -n "${SMOOTHD_TEST_DEBIAN_MIRROR:-}" ]; then
        echo "$SMOOTHD_TEST_DEBIAN_MIRROR"
        return
    fi
    local m
    m=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        grep -v security | grep -oE 'https?://[^ ]+' | head -n1 || true)
    echo "${m:-http://deb.debian.org/debian}"
}

# --- Debian base: debootstrap + docker import ------------------------------------------------
BASE_KEY=$( (cat "$RECIPES/debian-rootfs.sh") | hash_of)
BASE="smoothd-standin-debian:$BASE_KEY"
if have_image "$BASE"; then
    log "reusing $BASE"
else
    t=$(date +%s)
    command -v debootstrap >/dev/null 2>&1 || { log "debootstrap not installed (apt-get install debootstrap)"; exit 1; }
    work=$(mktemp -d /var/tmp/smoothd-rootfs.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    log "debootstrap bookworm from $(mirror) (about a minute)"
    if ! bash "$RECIPES/debian-rootfs.sh" "$work/rootfs" "$(mirror)" >"$work/log" 2>&1; then
        tail -n 30 "$work/log" >&2
        exit 1
    fi
    tar -C "$work/rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - "$BASE" >/dev/null
    rm -rf "$work"
    trap - EXIT
    log "built $BASE in $(elapsed "$t")s"
fi

# --- PostgreSQL: the base + Debian's postgresql, an entrypoint like the official image's ------
PG_KEY=$( (echo "$BASE"; cat "$RECIPES/postgres.Dockerfile" "$RECIPES/postgres-entrypoint.sh") | hash_of)
PG="smoothd-standin-postgres:$PG_KEY"
if have_image "$PG"; then
    log "reusing $PG"
else
    t=$(date +%s)
    ctx=$(mktemp -d)
    cp "$RECIPES/postgres.Dockerfile" "$ctx/Dockerfile"
    cp "$RECIPES/postgres-entrypoint.sh" "$ctx/"
    DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$BASE" -t "$PG" "$ctx" >&2
    rm -rf "$ctx"
    log "built $PG in $(elapsed "$t")s"
fi

# --- Rust builder: the base + a C toolchain + this machine's Rust + its crate cache ------------
# The crates Cargo.lock names are fetched on the host first (quick when present), so the image's
# cargo can run offline from the copied registry cache.
(cd "$ROOT" && cargo fetch --locked -q) >&2
SYSROOT=$(rustc --print sysroot)
CARGO_HOME_DIR=${CARGO_HOME:-$HOME/.cargo}
RUST_KEY=$( (echo "$BASE"; cat "$RECIPES/rust.Dockerfile"; rustc -vV; cargo -V; cat "$ROOT/Cargo.lock") | hash_of)
RUST="smoothd-standin-rust:$RUST_KEY"
if have_image "$RUST"; then
    log "reusing $RUST"
else
    t=$(date +%s)
    ctx=$(mktemp -d)
    cp "$RECIPES/rust.Dockerfile" "$ctx/Dockerfile"
    ln -s "$SYSROOT" "$ctx/rust"
    mkdir -p "$ctx/registry"
    ln -s "$CARGO_HOME_DIR/registry/index" "$ctx/registry/index"
    ln -s "$CARGO_HOME_DIR/registry/cache" "$ctx/registry/cache"
    # -h follows the links; documentation and the standard library's sources stay out.
    tar -C "$ctx" -ch --exclude=rust/share --exclude=rust/lib/rustlib/src --exclude=rust/lib/rustlib/etc . |
        DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$BASE" -t "$RUST" - >&2
    rm -rf "$ctx"
    log "built $RUST in $(elapsed "$t")s"
fi

# --- smoothd, from docker/Dockerfile unchanged ------------------------------------------------
IMAGE="smoothd-test:$PROFILE"
t=$(date +%s)
log "docker build -f docker/Dockerfile (PROFILE=$PROFILE; cached layers are reused)"
DOCKER_BUILDKIT=0 docker build -q -f "$ROOT/docker/Dockerfile" \
    --build-arg "RUST_IMAGE=$RUST" --build-arg "RUNTIME_IMAGE=$BASE" --build-arg "PROFILE=$PROFILE" \
    -t "$IMAGE" "$ROOT" >&2
log "smoothd image ready in $(elapsed "$t")s"

# Stand-ins of an older recipe are not used again: drop their tags (kept while a container uses them).
for repo_tag in "$BASE" "$PG" "$RUST"; do
    docker images --format '{{.Repository}}:{{.Tag}}' "${repo_tag%%:*}" | grep -vxF "$repo_tag" |
        xargs -r docker rmi >/dev/null 2>&1 || true
done

echo "SMOOTHD_IMAGE=$IMAGE"
echo "SMOOTHD_POSTGRES_IMAGE=$PG"
echo "SMOOTHD_RUST_IMAGE=$RUST"
echo "SMOOTHD_RUNTIME_IMAGE=$BASE"
