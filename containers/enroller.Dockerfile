# The enroller image. Build from the repository root:
#
#   docker build -f containers/enroller.Dockerfile -t shard-custodians/enroller \
#       --build-arg BINARIES=shard-custodians/binaries .
#
# containers/build.sh does this. BINARIES names an image holding /bin/enroller: made from
# binaries compiled on this host (binaries-host.Dockerfile; no registry needed) or in a
# Rust stage (binaries.Dockerfile, for machines that can pull the Rust image).
#
# The runtime stage adds only SoftHSM2's module to the base. It runs as the unprivileged
# user `shard`; its state (SoftHSM2 token, user database) is in the volume at
# /var/lib/shard, the public keys `enroller init` writes in /var/lib/shard-public, and
# its identity and configuration in a read-only volume at /etc/shard/identity.
ARG BASE=debian:bookworm-slim
ARG BINARIES=shard-custodians/binaries:latest

FROM ${BINARIES} AS binaries

FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libsofthsm2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 shard \
 && useradd --system --uid 10001 --gid shard --home-dir /var/lib/shard --shell /usr/sbin/nologin shard \
 && install -d -o shard -g shard -m 0700 /var/lib/shard /var/lib/shard-public
COPY containers/etc/enroller-token.toml /etc/shard/
COPY softhsm/softhsm2.conf.in /usr/local/share/shard/softhsm2.conf.in
COPY containers/start.sh /usr/local/bin/shard-start
# Written by the compose file's one-shot `pki` service.
ENV ENROLLER_CONFIG=/etc/shard/identity/enroller.toml SHARD_PUBLIC_DIR=/var/lib/shard-public
COPY --from=binaries /bin/enroller /usr/local/bin/enroller
USER shard
WORKDIR /var/lib/shard
EXPOSE 7000
HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=3 CMD ["enroller", "health"]
ENTRYPOINT ["shard-start", "enroller"]
CMD ["serve"]
