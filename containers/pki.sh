#!/bin/sh
# The compose cluster's one-shot PKI steps, run in the shardctl image as root with
# only CHOWN, DAC_OVERRIDE and FOWNER, no network. Idempotent: what exists is kept.
#
#   shard-pki services   the trust domain's CA (in the `ca` volume, nowhere else), each
#                        custodian's and the enroller's TLS identity into that service's
#                        own volume, the enroller's configuration, and the client
#                        volume's shardctl configuration with an admin identity
#   shard-pki user-ca    after `enroller init`: the enroller's user CA certificate, and
#                        the enroller's manifest key pinned in the client configuration
#
# Volumes: /pki (CA), /out/<service> for each service, /out/client for shardctl.
# Environment: SHARD_TRUST_DOMAIN, SHARD_NET_PREFIX (the cluster network's first three
# octets; custodian-N is .1N, the enroller .10), SHARD_THRESHOLD.
set -eu
umask 077

td=${SHARD_TRUST_DOMAIN:-demo.test}
net=${SHARD_NET_PREFIX:-10.89.47}
threshold=${SHARD_THRESHOLD:-3}
custodians="custodian-1 custodian-2 custodian-3 custodian-4"
uid=10001
export SHARDCTL_PKI_DIR=/pki

log() { echo "shard-pki: $*" >&2; }

# install_file SRC DEST MODE: copies unless DEST already holds the same bytes.
install_file() {
    if ! cmp -s "$1" "$2" 2>/dev/null; then
        cp "$1" "$2.new"
        chmod "$3" "$2.new"
        mv "$2.new" "$2"
    fi
}

own() { chown -R "$uid:$uid" "$1"; chmod 0700 "$1"; }

# issue ROLE NAME [shardctl pki issue options]: once; the files stay in /pki.
issue() {
    role=$1 name=$2
    shift 2
    [ -f "/pki/$role-$name.pem" ] || shardctl pki issue "$role" "$name" "$@" >/dev/null
}

# identity ROLE NAME VOLUME: the service's TLS files in its volume.
identity() {
    mkdir -p "$3/tls"
    install_file /pki/ca.pem "$3/tls/ca.pem" 0644
    install_file "/pki/$1-$2.pem" "$3/tls/cert.pem" 0644
    install_file "/pki/$1-$2.key" "$3/tls/key.pem" 0600
    own "$3"
}

services() {
    if [ ! -f /pki/ca.pem ]; then
        shardctl pki init --trust-domain "$td" >/dev/null
        log "trust domain $td created"
    fi
    for c in $custodians; do
        # The DNS name on the cluster network, and localhost for a published port.
        issue custodian "$c" --dns "$c" --dns localhost --ip 127.0.0.1
        identity custodian "$c" "/out/$c"
    done
    issue enroller main --dns enroller --dns localhost --ip 127.0.0.1
    identity enroller main /out/enroller

    i=0
    {
        printf '# Written by shard-pki (containers/pki.sh) on every start of the cluster.\n'
        printf 'name = "main"\ntrust_domain = "%s"\nlisten = "0.0.0.0:7000"\n' "$td"
        printf 'health_listen = "127.0.0.1:7100"\ndatabase = "/var/lib/shard/enroller.db"\n'
        printf 'profile = "/etc/shard/enroller-token.toml"\n'
        printf 'user_ca_cert = "/var/lib/shard/tls/user-ca.pem"\nthreshold = %s\n\n' "$threshold"
        printf '[tls]\nca = "/var/lib/shard/tls/ca.pem"\ncert = "/var/lib/shard/tls/cert.pem"\n'
        printf 'key = "/var/lib/shard/tls/key.pem"\n'
        for c in $custodians; do
            i=$((i + 1))
            printf '\n[[custodians]]\nname = "%s"\naddress = "%s.1%s:7001"\nserver_name = "%s"\n' \
                "$c" "$net" "$i" "$c"
        done
    } >/out/enroller/enroller.toml.gen
    install_file /out/enroller/enroller.toml.gen /out/enroller/enroller.toml 0600
    rm -f /out/enroller/enroller.toml.gen
    own /out/enroller

    # shardctl's home in the client volume: CA, admin identity, configuration.
    home=/out/client
    mkdir -p "$home/pki" "$home/.config/shardctl"
    issue admin ops
    install_file /pki/ca.pem "$home/pki/ca.pem" 0644
    install_file /pki/admin-ops.pem "$home/pki/admin-ops.pem" 0644
    install_file /pki/admin-ops.key "$home/pki/admin-ops.key" 0600
    {
        printf '# Written by shard-pki (containers/pki.sh) on every start of the cluster.\n'
        printf 'trust_domain = "%s"\nca = "/home/shard/pki/ca.pem"\n' "$td"
        printf 'manifest_key = "/home/shard/pki/enroller-manifest.pub.pem"\n\n'
        printf '[enroller]\naddress = "enroller:7000"\nserver_name = "enroller"\nname = "main"\n'
        for c in $custodians; do
            printf '\n[[custodians]]\nname = "%s"\naddress = "%s:7001"\nserver_name = "%s"\n' "$c" "$c" "$c"
        done
        printf '\n[admin]\ncert = "/home/shard/pki/admin-ops.pem"\nkey = "/home/shard/pki/admin-ops.key"\n'
    } >"$home/config.toml.gen"
    install_file "$home/config.toml.gen" "$home/.config/shardctl/config.toml" 0644
    rm -f "$home/config.toml.gen"
    chown -R "$uid:$uid" "$home"
    log "identities ready: $custodians enroller admin"
}

user_ca() {
    pub=/out/enroller/public
    for f in enroller-user-ca.pub.pem enroller-manifest.pub.pem; do
        [ -f "$pub/$f" ] || { log "$pub/$f is missing: enroller init has not run"; exit 1; }
    done
    if [ ! -f /out/enroller/tls/user-ca.pem ]; then
        [ -f /pki/user-ca.pem ] || shardctl pki issue-user-ca --public-key "$pub/enroller-user-ca.pub.pem" >/dev/null
        install_file /pki/user-ca.pem /out/enroller/tls/user-ca.pem 0644
        log "user CA issued for the enroller's token key"
    fi
    own /out/enroller
    install_file "$pub/enroller-manifest.pub.pem" /out/client/pki/enroller-manifest.pub.pem 0644
    chown -R "$uid:$uid" /out/client
}

case "${1:-}" in
services) services ;;
user-ca) user_ca ;;
*) echo "usage: shard-pki services|user-ca" >&2; exit 2 ;;
esac
