#!/usr/bin/env bash
# Installs what this project needs on a Debian (bookworm) machine, only where missing.
# Safe to run again. Used by both README commands and by .ci/run.
#
#   scripts/setup.sh          system packages (SoftHSM2, swtpm, TPM2 TSS, ...)
#   scripts/setup.sh --ci     also the CI tools (cargo-audit)
set -euo pipefail

PACKAGES=(
  softhsm2        # PKCS#11 token for development, tests and the demo
  opensc          # pkcs11-tool, to inspect tokens by hand
  swtpm           # TPM 2.0 simulator
  swtpm-tools     # swtpm_setup
  libtss2-dev     # TPM2 TSS (ESAPI, TCTI loaders) for tss-esapi
  tpm2-tools      # tpm2_* commands, for inspecting a TPM by hand
  pkg-config      # lets tss-esapi-sys find libtss2
  libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-abrmd libtss2-tcti-tabrmd0 dbus
                  # tpm2-pkcs11 over swtpm (hsm/tests/pkcs11.rs): module, tpm2_ptool,
                  # the resource manager it needs, and a private D-Bus for that
  openssl         # the outside verifier of Ed25519 threshold signatures (threshold/tests)
  python3         # containers/test.sh reads docker's JSON with it
  procps          # kill, ps: the tests stop the helper daemons they start
  ca-certificates
)

log() { printf 'setup: %s\n' "$*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null; then SUDO=sudo; else
      log "missing packages: ${missing[*]}; run as root or install them first"; exit 1
    fi
  else
    SUDO=
  fi
  log "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "system packages present"
fi

if ! command -v cargo >/dev/null; then
  log "cargo not found: install a Rust toolchain (1.85 or newer) first"; exit 1
fi

if [[ "${1:-}" == "--ci" ]]; then
  # fmt and clippy come with most toolchains; add them where rustup can and they are missing.
  for tool in fmt clippy; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
      if command -v rustup >/dev/null; then
        log "adding the ${tool/fmt/rustfmt} component"
        rustup component add "${tool/fmt/rustfmt}"
      else
        log "cargo $tool is missing and there is no rustup to add it"; exit 1
      fi
    fi
  done
  if ! cargo audit --version >/dev/null 2>&1; then
    log "installing cargo-audit (a few minutes, once per machine)"
    cargo install --locked --quiet cargo-audit
  fi
fi
