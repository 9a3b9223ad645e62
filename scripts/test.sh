#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs every test of the
# workspace against real SoftHSM2 and swtpm processes that the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo test --workspace --all-features --locked "$@"
