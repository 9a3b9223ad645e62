# The three programs as compiled on this Debian bookworm host (containers/build.sh puts
# them in containers/dist/), as the image the program images copy from.
FROM scratch
COPY containers/dist/custodian containers/dist/enroller containers/dist/shardctl /bin/
