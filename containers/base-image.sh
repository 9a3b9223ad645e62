#!/usr/bin/env bash
# Makes sure the image `debian:bookworm-slim` exists in the local Docker engine.
#
# On a machine that can pull images it is pulled. Where no registry answers, it
# is built from Debian's packages: debootstrap (minbase) into a temporary folder,
# trimmed the way the slim image is, then `docker import`ed under the same name,
# so the Dockerfiles and docker-compose.yml work unchanged on both kinds of machine.
# The package mirror is read from this machine's apt configuration; it ends up
# inside the image (apt needs it there) but never in the repository.
#
#   containers/base-image.sh            ensure the image exists
#   containers/base-image.sh --rebuild  build it from packages even if present
set -euo pipefail

IMAGE="debian:bookworm-slim"
SUITE="bookworm"
log() { printf 'base-image: %s\n' "$*" >&2; }

rebuild=0
[[ "${1:-}" == "--rebuild" ]] && rebuild=1

if ((!rebuild)) && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE present"
  exit 0
fi

if ((!rebuild)) && timeout 60 docker pull -q "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE pulled"
  exit 0
fi

# The first Debian mirror (and security mirror) named by this machine's apt sources,
# in either the deb822 (.sources) or the one-line (.list) format.
apt_uri() { # $1: "debian" or "debian-security"
  local want="$1" files=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] && files+=("$f")
  done
  ((${#files[@]})) || return 0
  awk -v want="$want" '
    /^[[:space:]]*#/ { next }
    /^URIs:/ { for (i = 2; i <= NF; i++) print $i }
    /^deb[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; break } }
  ' "${files[@]}" | while read -r uri; do
    uri="${uri%/}"
    case "$want" in
      debian) [[ "$uri" == */debian ]] && { echo "$uri"; break; } ;;
      debian-security) [[ "$uri" == */debian-security ]] && { echo "$uri"; break; } ;;
    esac
  done
}

mirror="$(apt_uri debian)"
security="$(apt_uri debian-security)"
mirror="${mirror:-http://deb.debian.org/debian}"
log "building $IMAGE from Debian packages (mirror from this machine's apt configuration; a few minutes)"

# debootstrap, apt-get and the root file system need root.
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { log "building the base image needs root (or sudo)"; exit 1; }
  SUDO=sudo
else
  SUDO=
fi
if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

work="$(mktemp -d /var/tmp/shard-base.XXXXXX)"
trap '$SUDO rm -rf "$work"' EXIT
root="$work/root"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
$SUDO debootstrap --variant=minbase --keyring="$keyring" "$SUITE" "$root" "$mirror" >"$work/log" 2>&1 || {
  tail -n 30 "$work/log" >&2
  log "debootstrap failed"
  exit 1
}

# Trim it as the slim image is trimmed: no documentation, manuals or translations
# installed by later apt-get runs, no package caches kept.
write() { $SUDO tee "$root/$1" >/dev/null; }
write etc/dpkg/dpkg.cfg.d/slim <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
write etc/apt/apt.conf.d/docker-clean <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
CFG
echo 'Acquire::Languages "none";' | write etc/apt/apt.conf.d/docker-no-languages
$SUDO rm -f "$root/etc/apt/sources.list"
{
  printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: %s\n' \
    "$mirror" "$SUITE" "$SUITE" "$keyring"
  if [[ -n "$security" ]]; then
    printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: %s\n' \
      "$security" "$SUITE" "$keyring"
  fi
} | write etc/apt/sources.list.d/debian.sources
$SUDO sh -c 'cd "$1" && rm -rf var/cache/apt/archives/*.deb var/lib/apt/lists/* usr/share/doc/* usr/share/man/* usr/share/locale/* tmp/*' sh "$root"
: | write etc/hostname
: | write etc/resolv.conf

$SUDO tar --numeric-owner -C "$root" -c . | docker import \
  --change 'CMD ["bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'LABEL org.opencontainers.image.description="Debian bookworm minbase built locally from Debian packages by containers/base-image.sh"' \
  - "$IMAGE" >/dev/null
log "$IMAGE built ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
