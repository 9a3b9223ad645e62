# A TPM 2.0 simulator (swtpm, from Debian) as a sidecar for one custodian container.
# It listens on loopback only: the compose file runs its custodian in the same network
# namespace (like a pod), so nothing else can reach it. Tests and demonstrations only:
# its state is a file in the volume at /var/lib/swtpm, so it protects nothing that a
# real TPM would. Build from the repository root:
#
#   docker build -f containers/swtpm.Dockerfile -t shard-custodians/swtpm .
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends swtpm \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 shard \
 && useradd --system --uid 10001 --gid shard --home-dir /var/lib/swtpm --shell /usr/sbin/nologin shard \
 && install -d -o shard -g shard -m 0700 /var/lib/swtpm
USER shard
WORKDIR /var/lib/swtpm
# TPM commands on 2321, the control channel (power, startup) on 2322.
EXPOSE 2321 2322
HEALTHCHECK --interval=5s --timeout=3s --retries=3 CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/2322"]
ENTRYPOINT ["swtpm", "socket", "--tpm2", "--tpmstate", "dir=/var/lib/swtpm", \
            "--server", "type=tcp,port=2321,bindaddr=127.0.0.1", \
            "--ctrl", "type=tcp,port=2322,bindaddr=127.0.0.1", \
            "--flags", "not-need-init,startup-clear"]
