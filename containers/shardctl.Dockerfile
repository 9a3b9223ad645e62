# The shardctl image: the client, and the compose cluster's one-shot PKI steps
# (shard-pki).
#
#   docker build -f containers/shardctl.Dockerfile -t shard-custodians/shardctl \
#       --build-arg BINARIES=shard-custodians/binaries .
#
# containers/build.sh does this. BINARIES names an image holding /bin/shardctl: made from
# binaries compiled on this host (binaries-host.Dockerfile; no registry needed) or in a
# Rust stage (binaries.Dockerfile, for machines that can pull the Rust image).
#
# It runs as the unprivileged user `shard`. In the compose file its configuration, CA
# and admin identity come read-only from /etc/shardctl, and its home (/home/shard: login
# certificate, cached manifests) is a volume.
ARG BASE=debian:bookworm-slim
ARG BINARIES=shard-custodians/binaries:latest

FROM ${BINARIES} AS binaries

FROM ${BASE}
# shardctl needs nothing beyond the C library.
RUN groupadd --system --gid 10001 shard \
 && useradd --system --uid 10001 --gid shard --home-dir /home/shard --shell /usr/sbin/nologin shard \
 && install -d -o shard -g shard -m 0700 /home/shard \
 # Mount points of the one-shot PKI steps: volumes first mounted here belong to `shard`,
 # so those steps need no root.
 && install -d -o shard -g shard -m 0700 /var/lib/shard-pki /var/lib/shard-pki/ca \
      /var/lib/shard-pki/in /var/lib/shard-pki/in/enroller /var/lib/shard-pki/out \
      /var/lib/shard-pki/out/custodian-1 /var/lib/shard-pki/out/custodian-2 \
      /var/lib/shard-pki/out/custodian-3 /var/lib/shard-pki/out/custodian-4 \
      /var/lib/shard-pki/out/enroller /var/lib/shard-pki/out/client
COPY containers/pki.sh /usr/local/bin/shard-pki
COPY --from=binaries /bin/shardctl /usr/local/bin/shardctl
USER shard
WORKDIR /home/shard
# Healthy while every service in the configuration answers with its verified identity.
HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD ["shardctl", "status"]
ENTRYPOINT ["shardctl"]
CMD ["--help"]
