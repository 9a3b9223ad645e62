#!/bin/sh
# The compose cluster's one-shot PKI steps, run in the shardctl image as user `shard`
# with no capabilities and no network. Idempotent: what exists and is valid is kept.
#
#   shard-pki services   the trust domain's CA (the `ca` volume, which nothing else
#                        mounts); each custodian's and the enroller's TLS identity, the
#                        enroller's configuration, and shardctl's configuration with an
#                        admin identity, each into an identity volume that its service
#                        mounts read-only
#   shard-pki user-ca    after `enroller init`: the enroller's user CA certificate, and
#                        its manifest key pinned in shardctl's configuration
#
# The only thing read from a volume a service writes is the enroller's two public keys
# (enroller-init writes them; the serving enroller mounts them read-only). Each is read
# once, checked to be one PEM P-256 public key, and written from that checked copy. A
# pinned key that changes later is refused, not replaced.
# Certificates with less than SHARD_RENEW_DAYS (default 7) left are issued again.
#
# Environment: SHARD_TRUST_DOMAIN, SHARD_NET_PREFIX (the cluster network's first three
# octets; custodian-N is .1N), SHARD_THRESHOLD.
set -eu
umask 077

td=${SHARD_TRUST_DOMAIN:-demo.test}
net=${SHARD_NET_PREFIX:-10.89.47}
threshold=${SHARD_THRESHOLD:-3}
renew_days=${SHARD_RENEW_DAYS:-7}
custodians="custodian-1 custodian-2 custodian-3 custodian-4"
root=/var/lib/shard-pki
ca=$root/ca
out=$root/out
export SHARDCTL_PKI_DIR=$ca

log() { echo "shard-pki: $*" >&2; }
die() {
    log "$*"
    exit 1
}

# put FILE MODE: stdin becomes FILE (atomically; only this step writes these volumes).
put() {
    cat >"$1.tmp"
    chmod "$2" "$1.tmp"
    mv -f "$1.tmp" "$1"
}

# install_file SRC DEST MODE: copies unless DEST already holds the same bytes.
install_file() {
    cmp -s "$1" "$2" 2>/dev/null || put "$2" "$3" <"$1"
}

# expiring CERT: true when CERT ends within renew_days.
expiring() {
    summary=$(shardctl pki show "$1") || die "cannot read $1"
    not_after=$(printf '%s\n' "$summary" | sed -n 's/^not after: *//p')
    ends=$(date -u -d "$not_after" +%s) || die "$1: cannot read its end of validity ($not_after)"
    case "$ends" in '' | *[!0-9]*) die "$1: cannot read its end of validity ($not_after)" ;; esac
    [ "$ends" -lt $(($(date -u +%s) + renew_days * 86400)) ]
}

# retire BASE: moves BASE.pem and BASE.key aside so they can be issued again.
retire() {
    for f in "$1.pem" "$1.key"; do
        if [ -f "$f" ]; then mv -f "$f" "$f.old"; fi
    done
}

# issue ROLE NAME [shardctl pki issue options]: a certificate in the CA volume, issued
# again when missing (a key without its certificate is an interrupted run) or expiring.
issue() {
    role=$1 name=$2
    shift 2
    base=$ca/$role-$name
    if [ ! -f "$base.pem" ] || expiring "$base.pem"; then
        retire "$base"
        shardctl pki issue "$role" "$name" "$@" >/dev/null
        log "issued $role $name"
    fi
}

# identity ROLE NAME DIR: the service's TLS files in its identity volume.
identity() {
    install_file "$ca/ca.pem" "$3/ca.pem" 0644
    install_file "$ca/$1-$2.pem" "$3/cert.pem" 0644
    install_file "$ca/$1-$2.key" "$3/key.pem" 0600
}

services() {
    if [ ! -f "$ca/ca.pem" ]; then
        retire "$ca/ca" # a key without its certificate: an interrupted first run
        shardctl pki init --trust-domain "$td" >/dev/null
        log "trust domain $td created"
    fi
    for c in $custodians; do
        # The DNS name on the cluster network, and localhost for the published port.
        issue custodian "$c" --dns "$c" --dns localhost --ip 127.0.0.1
        identity custodian "$c" "$out/$c"
    done
    issue enroller main --dns enroller --dns localhost --ip 127.0.0.1
    identity enroller main "$out/enroller"

    i=0
    {
        printf '# Written by shard-pki (containers/pki.sh) on every start of the cluster.\n'
        printf 'name = "main"\ntrust_domain = "%s"\nlisten = "0.0.0.0:7000"\n' "$td"
        printf 'health_listen = "127.0.0.1:7100"\ndatabase = "/var/lib/shard/enroller.db"\n'
        printf 'profile = "/etc/shard/enroller-token.toml"\n'
        printf 'user_ca_cert = "/etc/shard/identity/user-ca.pem"\nthreshold = %s\n\n' "$threshold"
        printf '[tls]\nca = "/etc/shard/identity/ca.pem"\ncert = "/etc/shard/identity/cert.pem"\n'
        printf 'key = "/etc/shard/identity/key.pem"\n'
        for c in $custodians; do
            i=$((i + 1))
            printf '\n[[custodians]]\nname = "%s"\naddress = "%s.1%s:7001"\nserver_name = "%s"\n' \
                "$c" "$net" "$i" "$c"
        done
    } | put "$out/enroller/enroller.toml" 0644

    # shardctl's configuration, CA and admin identity (mounted at /etc/shardctl).
    issue admin ops
    install_file "$ca/ca.pem" "$out/client/ca.pem" 0644
    install_file "$ca/admin-ops.pem" "$out/client/admin-ops.pem" 0644
    install_file "$ca/admin-ops.key" "$out/client/admin-ops.key" 0600
    {
        printf '# Written by shard-pki (containers/pki.sh) on every start of the cluster.\n'
        printf 'trust_domain = "%s"\nca = "ca.pem"\nmanifest_key = "enroller-manifest.pub.pem"\n\n' "$td"
        printf '[enroller]\naddress = "enroller:7000"\nserver_name = "enroller"\nname = "main"\n'
        for c in $custodians; do
            printf '\n[[custodians]]\nname = "%s"\naddress = "%s:7001"\nserver_name = "%s"\n' "$c" "$c" "$c"
        done
        printf '\n[admin]\ncert = "admin-ops.pem"\nkey = "admin-ops.key"\n'
    } | put "$out/client/config.toml" 0644
    log "identities ready: $custodians, enroller, admin"
}

# public_key FILE: prints FILE's content if it is exactly one PEM P-256 public key
# (SubjectPublicKeyInfo, 91 bytes). Read once, without following a symbolic link or
# waiting on a FIFO: what is checked is what is used.
public_key() {
    [ -e "$1" ] || die "$1 is missing: has enroller init run?"
    [ -f "$1" ] && [ ! -L "$1" ] || die "$1 is not a regular file; refusing it"
    pem=$(dd if="$1" bs=4097 count=1 iflag=nofollow,nonblock status=none) || die "cannot read $1"
    [ "${#pem}" -le 4096 ] || die "$1 is too large for a public key"
    body=$(printf '%s\n' "$pem" | sed -e '1{/^-----BEGIN PUBLIC KEY-----$/d}' -e '${/^-----END PUBLIC KEY-----$/d}')
    lines=$(printf '%s\n' "$pem" | wc -l)
    [ "$(printf '%s\n' "$pem" | head -n 1)" = "-----BEGIN PUBLIC KEY-----" ] &&
        [ "$(printf '%s\n' "$pem" | tail -n 1)" = "-----END PUBLIC KEY-----" ] &&
        [ "$(printf '%s\n' "$body" | wc -l)" -eq $((lines - 2)) ] ||
        die "$1 is not a PEM public key"
    case "$body" in *[!A-Za-z0-9+/=$IFS]*) die "$1 is not a PEM public key" ;; esac
    der_len=$(printf '%s\n' "$body" | base64 -d 2>/dev/null | wc -c) || die "$1 is not a PEM public key"
    [ "$der_len" -eq 91 ] || die "$1 is not a P-256 public key"
    printf '%s\n' "$pem"
}

# pin NAME CONTENT DEST: DEST keeps its first content; a different one is refused.
pin() {
    if [ -f "$3" ]; then
        [ "$(cat "$3")" = "$2" ] && return 0
        die "the enroller's $1 changed (its token was replaced?); refusing to trust the new one. \
If the replacement is intended, check the new key and remove the pinned copy ($4) so the \
next start pins it; or start a new cluster with docker-compose down -v, which deletes \
every shard."
    fi
    printf '%s\n' "$2" | put "$3" 0644
}

user_ca() {
    user_ca_key=$(public_key "$root/in/enroller/enroller-user-ca.pub.pem")
    manifest_key=$(public_key "$root/in/enroller/enroller-manifest.pub.pem")
    pin "user-CA key" "$user_ca_key" "$ca/enroller-user-ca.pub.pem" \
        "enroller-user-ca.pub.pem in the ca volume"
    pin "manifest key" "$manifest_key" "$out/client/enroller-manifest.pub.pem" \
        "enroller-manifest.pub.pem in the identity-client volume"
    if [ ! -f "$ca/user-ca.pem" ] || expiring "$ca/user-ca.pem"; then
        if [ -f "$ca/user-ca.pem" ]; then mv -f "$ca/user-ca.pem" "$ca/user-ca.pem.old"; fi
        shardctl pki issue-user-ca --public-key "$ca/enroller-user-ca.pub.pem" >/dev/null
        log "user CA issued for the enroller's token key"
    fi
    install_file "$ca/user-ca.pem" "$out/enroller/user-ca.pem" 0644
}

case "${1:-}" in
services) services ;;
user-ca) user_ca ;;
*)
    echo "usage: shard-pki services|user-ca" >&2
    exit 2
    ;;
esac
