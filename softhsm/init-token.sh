#!/bin/sh
# Sets up a SoftHSM2 state directory with one token, for development, tests and
# containers. Idempotent: a token that already exists is left alone.
#
#   softhsm/init-token.sh STATE_DIR [TOKEN_LABEL]        (label defaults to "custodian")
#
# Writes STATE_DIR/softhsm2.conf (from softhsm2.conf.in) and STATE_DIR/tokens/, then
# initialises TOKEN_LABEL on SoftHSM's free slot and sets its user PIN. Prints
# "SOFTHSM2_CONF=<path>" for the caller to export.
#
# PINs (never taken from or put on a command line, where `ps` shows them):
#   user PIN  $SHARD_HSM_PIN, else the first line of $SHARD_HSM_PIN_FILE, else
#             STATE_DIR/user.pin, else a random one written to STATE_DIR/user.pin (0600)
#   SO PIN    $SHARD_HSM_SO_PIN, else STATE_DIR/so.pin, else random into STATE_DIR/so.pin
# They reach pkcs11-tool (OpenSC) as `env:NAME` references. softhsm2-util is not used
# because it accepts PINs only as arguments or from a terminal.
#
# Module: $SHARD_SOFTHSM_MODULE, default /usr/lib/softhsm/libsofthsm2.so.
set -eu
umask 077

state=${1:?usage: init-token.sh STATE_DIR [TOKEN_LABEL]}
label=${2:-custodian}
module=${SHARD_SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
here=$(cd "$(dirname "$0")" && pwd)

mkdir -p "$state/tokens"
state=$(cd "$state" && pwd)
conf="$state/softhsm2.conf"
if [ ! -f "$conf" ]; then
    sed "s|@TOKENDIR@|$state/tokens|" "$here/softhsm2.conf.in" >"$conf"
fi
SOFTHSM2_CONF=$conf
export SOFTHSM2_CONF

random_pin() {
    od -An -N12 -tx1 /dev/urandom | tr -d ' \n'
}

if [ -n "${SHARD_HSM_PIN:-}" ]; then
    :
elif [ -n "${SHARD_HSM_PIN_FILE:-}" ]; then
    SHARD_HSM_PIN=$(head -n 1 "$SHARD_HSM_PIN_FILE")
elif [ -f "$state/user.pin" ]; then
    SHARD_HSM_PIN=$(head -n 1 "$state/user.pin")
else
    SHARD_HSM_PIN=$(random_pin)
    printf '%s\n' "$SHARD_HSM_PIN" >"$state/user.pin"
fi
if [ -n "${SHARD_HSM_SO_PIN:-}" ]; then
    :
elif [ -f "$state/so.pin" ]; then
    SHARD_HSM_SO_PIN=$(head -n 1 "$state/so.pin")
else
    SHARD_HSM_SO_PIN=$(random_pin)
    printf '%s\n' "$SHARD_HSM_SO_PIN" >"$state/so.pin"
fi
export SHARD_HSM_PIN SHARD_HSM_SO_PIN

p11() {
    pkcs11-tool --module "$module" "$@"
}

if p11 --list-token-slots 2>/dev/null |
    sed -n 's/^ *token label *: //p' | grep -Fxq -- "$label"; then
    echo "init-token: token \"$label\" already present" >&2
else
    # SoftHSM always offers one uninitialised slot; use it, never slot 0 blindly
    # (that would re-initialise an existing token).
    free=$(p11 --list-token-slots 2>/dev/null | awk '
        /^Slot / { id = $3; gsub(/[():]/, "", id) }
        /token state: *uninitialized/ { print id; exit }')
    if [ -z "$free" ]; then
        echo "init-token: SoftHSM offers no free slot" >&2
        exit 1
    fi
    p11 --slot "$free" --init-token --label "$label" --so-pin env:SHARD_HSM_SO_PIN >/dev/null
    p11 --token-label "$label" --login --login-type so --so-pin env:SHARD_HSM_SO_PIN \
        --init-pin --pin env:SHARD_HSM_PIN >/dev/null
    echo "init-token: token \"$label\" initialised" >&2
fi
echo "SOFTHSM2_CONF=$conf"
