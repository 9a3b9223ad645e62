# The custodian image. Build from the repository root:
#
#   docker build -f containers/custodian.Dockerfile -t shard-custodians/custodian .
#       compiles the custodian in a Rust stage (needs the rust image from a registry)
#   docker build -f containers/custodian.Dockerfile --target host -t shard-custodians/custodian .
#       takes containers/dist/custodian, built on a Debian bookworm host
#       (containers/build.sh does this, for machines without a registry)
#
# The runtime stage has only the runtime libraries: SoftHSM2's module, the TPM2 TSS
# with its swtpm and device TCTIs. It runs as the unprivileged user `shard`; all state
# (SoftHSM2 token, database, TLS files) is in the volume at /var/lib/shard.
ARG BASE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm

FROM ${BASE} AS runtime
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
USER shard
WORKDIR /var/lib/shard
EXPOSE 7001
HEALTHCHECK --interval=5s --timeout=5s --start-period=120s --retries=3 CMD ["custodian", "health"]
ENTRYPOINT ["shard-start", "custodian"]
CMD ["serve"]

# Binaries built on the host (Debian bookworm, the same libraries as this image).
FROM runtime AS host
COPY containers/dist/custodian /usr/local/bin/custodian

# Binaries built here, for machines that can pull the Rust image.
FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libtss2-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p custodian \
 && install -m 0755 target/release/custodian /usr/local/bin/custodian

FROM runtime AS release
COPY --from=build /usr/local/bin/custodian /usr/local/bin/custodian
