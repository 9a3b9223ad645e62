#!/usr/bin/env bash
# Builds the cluster's images: debian:bookworm-slim when missing
# (containers/base-image.sh), shard-custodians/binaries (the three programs),
# shard-custodians/{custodian,enroller,shardctl} from it, and shard-custodians/swtpm.
# Installs what is missing first (scripts/setup.sh).
#
#   containers/build.sh                 binaries compiled on this (Debian bookworm) host,
#                                       release profile; no registry needed
#   SHARD_CARGO_PROFILE=debug containers/build.sh
#                                       the debug binaries the test suite has built
#   containers/build.sh --from-source   binaries compiled in a Rust stage
#                                       (containers/binaries.Dockerfile; needs the
#                                       rust:1-bookworm image from a registry)
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

# image NAME DOCKERFILE [docker build options]: quiet unless it fails.
image() {
  local name=$1 file=$2 out
  shift 2
  log "image shard-custodians/$name:$tag"
  out=$(docker build -f "containers/$file" -t "shard-custodians/$name:$tag" "$@" . 2>&1) || {
    printf '%s\n' "$out" >&2
    log "building shard-custodians/$name failed"
    exit 1
  }
}

if [[ "${1:-}" == "--from-source" ]]; then
  log "compiling custodian, enroller and shardctl in the Rust stage"
  image binaries binaries.Dockerfile
else
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
  image binaries binaries-host.Dockerfile
fi
for name in custodian enroller shardctl; do
  image "$name" "$name.Dockerfile" --build-arg "BINARIES=shard-custodians/binaries:$tag"
done
image swtpm swtpm.Dockerfile
log "done"
