#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the cluster demo
# (four custodians on SoftHSM2 and swtpm, a 3-of-4 P-256 key, one custodian lost,
# recovery proved by a signature). Everything it starts it stops again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
echo "building (the first build takes a few minutes)..." >&2
cargo build --release --locked --quiet -p shardctl -p custodian -p enroller -p testkit
SHARD_BIN_DIR="$CARGO_TARGET_DIR/release" exec "$CARGO_TARGET_DIR/release/demo" "$@"
