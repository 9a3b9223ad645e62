#!/usr/bin/env bash
# Builds the cluster's images from binaries compiled on this (Debian bookworm) host:
# debian:bookworm-slim when missing (containers/base-image.sh), then
# shard-custodians/{custodian,enroller,shardctl} from each Dockerfile's `host` target,
# and shard-custodians/swtpm. Installs what is missing first (scripts/setup.sh).
#
#   containers/build.sh            release binaries
#   SHARD_CARGO_PROFILE=debug containers/build.sh
#                                  the debug binaries the test suite has already built
# SHARD_TAG (default latest) tags the images; docker-compose.yml reads the same variable.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
profile="${SHARD_CARGO_PROFILE:-release}"
tag="${SHARD_TAG:-latest}"
log() { printf 'build: %s\n' "$*" >&2; }

if ! docker info >/dev/null 2>&1; then
  log "no Docker engine answers (is the daemon running, and may this user use it?)"
  exit 1
fi
containers/base-image.sh

log "compiling custodian, enroller and shardctl ($profile)"
case "$profile" in
  release) cargo build --release --locked --quiet -p custodian -p enroller -p shardctl ;;
  debug) cargo build --locked --quiet -p custodian -p enroller -p shardctl ;;
  *) log "SHARD_CARGO_PROFILE must be release or debug"; exit 2 ;;
esac
mkdir -p containers/dist
for b in custodian enroller shardctl; do
  install -m 0755 "$CARGO_TARGET_DIR/$profile/$b" "containers/dist/$b.new"
  # Debug information only makes the image large; symbols stay for backtraces.
  strip --strip-debug "containers/dist/$b.new"
  mv "containers/dist/$b.new" "containers/dist/$b"
done

# image NAME [docker build options]: quiet unless it fails.
image() {
  local name=$1 out
  shift
  log "image shard-custodians/$name:$tag"
  out=$(docker build -f "containers/$name.Dockerfile" -t "shard-custodians/$name:$tag" "$@" . 2>&1) || {
    printf '%s\n' "$out" >&2
    log "building shard-custodians/$name failed"
    exit 1
  }
}
for name in custodian enroller shardctl; do
  image "$name" --target host
done
image swtpm
log "done"
