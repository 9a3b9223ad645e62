#!/bin/sh
# Entrypoint of the custodian and enroller images:
#
#   shard-start custodian|enroller [serve|init]
#
# 1. With SHARD_DEVICE=softhsm (the default) prepares the SoftHSM2 directory in the
#    volume (/var/lib/shard/softhsm): configuration, and random user and SO PINs
#    (mode 0600) on first start. With SHARD_DEVICE=tpm there is nothing to prepare.
# 2. Runs the program's idempotent `init`: creates the token if it is missing (never
#    touches an existing one), provisions the keys, creates the database. A TPM that is
#    not answering yet (its sidecar still starting) is retried for a while.
# 3. `serve` (the default) then replaces this shell with the service.
set -eu
umask 077

prog=${1:?usage: shard-start custodian|enroller [serve|init]}
mode=${2:-serve}
state=/var/lib/shard
case "$prog" in custodian | enroller) ;; *) echo "shard-start: unknown program $prog" >&2; exit 2 ;; esac
case "$mode" in serve | init) ;; *) echo "shard-start: unknown mode $mode" >&2; exit 2 ;; esac

random_pin() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; echo; }

case "${SHARD_DEVICE:-softhsm}" in
softhsm)
    dir=$state/softhsm
    mkdir -p "$dir/tokens"
    if [ ! -f "$dir/softhsm2.conf" ]; then
        sed "s|@TOKENDIR@|$dir/tokens|" /usr/local/share/shard/softhsm2.conf.in >"$dir/softhsm2.conf.new"
        mv "$dir/softhsm2.conf.new" "$dir/softhsm2.conf"
    fi
    for f in user.pin so.pin; do
        if [ ! -s "$dir/$f" ]; then
            random_pin >"$dir/$f.new"
            mv "$dir/$f.new" "$dir/$f"
        fi
    done
    export SOFTHSM2_CONF="$dir/softhsm2.conf"
    create="--create-token-so-pin-file=$dir/so.pin"
    tries_default=1
    ;;
tpm)
    create=
    tries_default=30 # the sidecar may still be starting
    ;;
*) echo "shard-start: SHARD_DEVICE must be softhsm or tpm" >&2; exit 2 ;;
esac

if [ "$prog" = enroller ]; then
    public=${SHARD_PUBLIC_DIR:-$state/public}
    mkdir -p "$public"
    set -- init --out-dir "$public"
else
    set -- init
fi
[ -n "$create" ] && set -- "$@" "$create"

tries=0
until "$prog" "$@"; do
    tries=$((tries + 1))
    if [ "$tries" -ge "${SHARD_INIT_TRIES:-$tries_default}" ]; then
        echo "shard-start: $prog init failed $tries times; giving up" >&2
        exit 1
    fi
    sleep 2
done

[ "$mode" = serve ] && exec "$prog" serve
exit 0
