# The custodian image. Build from the repository root:
#
#   docker build -f containers/custodian.Dockerfile -t shard-custodians/custodian \
#       --build-arg BINARIES=shard-custodians/binaries .
#
# containers/build.sh does this. BINARIES names an image holding /bin/custodian: made from
# binaries compiled on this host (binaries-host.Dockerfile; no registry needed) or in a
# Rust stage (binaries.Dockerfile, for machines that can pull the Rust image).
#
# The runtime stage has only the runtime libraries: SoftHSM2's module, the TPM2 TSS
# with its swtpm and device TCTIs. It runs as the unprivileged user `shard`; its state
# (SoftHSM2 token, database) is in the volume at /var/lib/shard, its TLS identity in
# a read-only volume at /etc/shard/identity.
ARG BASE=debian:bookworm-slim
ARG BINARIES=shard-custodians/binaries:latest

FROM ${BINARIES} AS binaries

FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libsofthsm2 libtss2-esys-3.0.2-0 libtss2-tctildr0 libtss2-mu0 \
      libtss2-tcti-swtpm0 libtss2-tcti-device0 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 shard \
 && useradd --system --uid 10001 --gid shard --home-dir /var/lib/shard --shell /usr/sbin/nologin shard \
 && install -d -o shard -g shard -m 0700 /var/lib/shard
COPY containers/etc/custodian.toml containers/etc/softhsm2.toml containers/etc/tpm2.toml /etc/shard/
COPY softhsm/softhsm2.conf.in /usr/local/share/shard/softhsm2.conf.in
COPY containers/start.sh /usr/local/bin/shard-start
ENV CUSTODIAN_CONFIG=/etc/shard/custodian.toml TSS2_LOG=all+NONE
COPY --from=binaries /bin/custodian /usr/local/bin/custodian
USER shard
WORKDIR /var/lib/shard
EXPOSE 7001
HEALTHCHECK --interval=5s --timeout=5s --start-period=120s --retries=3 CMD ["custodian", "health"]
ENTRYPOINT ["shard-start", "custodian"]
CMD ["serve"]
