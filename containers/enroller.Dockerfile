# The enroller image. Build from the repository root:
#
#   docker build -f containers/enroller.Dockerfile -t shard-custodians/enroller .
#       compiles the enroller in a Rust stage (needs the rust image from a registry)
#   docker build -f containers/enroller.Dockerfile --target host -t shard-custodians/enroller .
#       takes containers/dist/enroller, built on a Debian bookworm host
#       (containers/build.sh does this, for machines without a registry)
#
# The runtime stage adds only SoftHSM2's module to the base. It runs as the unprivileged
# user `shard`; all state (SoftHSM2 token, user database, TLS files, configuration) is
# in the volume at /var/lib/shard.
ARG BASE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm

FROM ${BASE} AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libsofthsm2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 shard \
 && useradd --system --uid 10001 --gid shard --home-dir /var/lib/shard --shell /usr/sbin/nologin shard \
 && install -d -o shard -g shard -m 0700 /var/lib/shard
COPY containers/etc/enroller-token.toml /etc/shard/
COPY softhsm/softhsm2.conf.in /usr/local/share/shard/softhsm2.conf.in
COPY containers/start.sh /usr/local/bin/shard-start
# Written into the volume by the compose file's one-shot `pki` service.
ENV ENROLLER_CONFIG=/var/lib/shard/enroller.toml
USER shard
WORKDIR /var/lib/shard
EXPOSE 7000
HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=3 CMD ["enroller", "health"]
ENTRYPOINT ["shard-start", "enroller"]
CMD ["serve"]

# Binaries built on the host (Debian bookworm, the same libraries as this image).
FROM runtime AS host
COPY containers/dist/enroller /usr/local/bin/enroller

# Binaries built here, for machines that can pull the Rust image.
FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libtss2-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p enroller \
 && install -m 0755 target/release/enroller /usr/local/bin/enroller

FROM runtime AS release
COPY --from=build /usr/local/bin/enroller /usr/local/bin/enroller
