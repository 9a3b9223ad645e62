# Sourced by the scripts: one cargo target directory outside the clone, reused
# between clones (cargo handles staleness).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shard-custodians/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
