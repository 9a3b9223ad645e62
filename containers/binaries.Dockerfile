# The three programs compiled in a Rust stage, for machines that can pull the Rust
# image; `containers/build.sh --from-source` runs it. Where no registry answers,
# build.sh makes the same image from binaries compiled on the host instead
# (binaries-host.Dockerfile). The program images copy from it (build argument BINARIES).
#
#   docker build -f containers/binaries.Dockerfile -t shard-custodians/binaries .
ARG RUST_IMAGE=rust:1-bookworm
FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libtss2-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p custodian -p enroller -p shardctl \
 && mkdir /out \
 && for b in custodian enroller shardctl; do install -m 0755 "target/release/$b" /out/; done

FROM scratch
COPY --from=build /out/ /bin/
