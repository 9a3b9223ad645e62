# The shardctl image: the client, and the compose cluster's one-shot PKI steps
# (shard-pki). Build from the repository root:
#
#   docker build -f containers/shardctl.Dockerfile -t shard-custodians/shardctl .
#       compiles shardctl in a Rust stage (needs the rust image from a registry)
#   docker build -f containers/shardctl.Dockerfile --target host -t shard-custodians/shardctl .
#       takes containers/dist/shardctl, built on a Debian bookworm host
#       (containers/build.sh does this, for machines without a registry)
#
# It runs as the unprivileged user `shard` whose home (/home/shard: configuration,
# login certificate, cached manifests) is a volume in the compose file.
ARG BASE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm

FROM ${BASE} AS runtime
# shardctl needs nothing beyond the C library.
RUN groupadd --system --gid 10001 shard \
 && useradd --system --uid 10001 --gid shard --home-dir /home/shard --shell /usr/sbin/nologin shard \
 && install -d -o shard -g shard -m 0700 /home/shard
COPY containers/pki.sh /usr/local/bin/shard-pki
USER shard
WORKDIR /home/shard
# Healthy while every service in the configuration answers with its verified identity.
HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD ["shardctl", "status"]
ENTRYPOINT ["shardctl"]
CMD ["--help"]

# Binaries built on the host (Debian bookworm, the same libraries as this image).
FROM runtime AS host
COPY containers/dist/shardctl /usr/local/bin/shardctl

# Binaries built here, for machines that can pull the Rust image.
FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libtss2-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p shardctl \
 && install -m 0755 target/release/shardctl /usr/local/bin/shardctl

FROM runtime AS release
COPY --from=build /usr/local/bin/shardctl /usr/local/bin/shardctl
