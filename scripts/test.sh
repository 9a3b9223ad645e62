#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs every test of the
# workspace against real SoftHSM2 and swtpm processes that the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
# Every device the tests use is installed above: a test that cannot find one fails.
export SHARD_REQUIRE_ALL_DEVICES=1
# The TPM stack prints its own ERROR lines for every refusal the tests provoke on purpose.
export TSS2_LOG="${TSS2_LOG:-all+NONE}"
# The end-to-end tests run the services as real processes: build every binary first, with
# the same targets and features as the test run below, so that nothing is built twice.
cargo build --workspace --bins --tests --all-features --locked
cargo test --workspace --all-features --locked "$@"
# The cluster in containers (docker-compose.yml), when a Docker engine answers; it
# reuses the debug binaries built above. Prints SKIPPED when there is no engine.
SHARD_CARGO_PROFILE=debug containers/test.sh
