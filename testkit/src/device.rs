//! The devices services seal with: private SoftHSM2 tokens and swtpm instances, started by
//! `hsm`'s test harnesses (re-exported here, so that every test reaches devices through this
//! crate), and the one [`Device`] a service process is given.

use std::ffi::OsString;

pub use hsm::testing::*;

use crate::scan::{needles_for_text, Needle};
use hsm::testing::softhsm::SoftHsm;
use hsm::testing::swtpm::Swtpm;

/// Which kind of device a service seals with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SoftHSM2 token (PKCS#11, AES-GCM).
    SoftHsm,
    /// A swtpm (TPM 2.0).
    Tpm,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::SoftHsm => "SoftHSM2",
            Backend::Tpm => "swtpm",
        })
    }
}

/// A started device; it stops when dropped.
#[derive(Debug)]
pub enum Device {
    /// A standalone SoftHSM2 token (a SoftHSM directory of its own, for child processes)
    /// and its user PIN.
    Token {
        /// The token.
        token: SoftHsm,
        /// Its user PIN.
        pin: String,
    },
    /// A private swtpm.
    Tpm(Swtpm),
}

impl Device {
    /// Starts a device of `backend`; a token gets the label `token_label`.
    pub fn start(backend: Backend, token_label: &str) -> Result<Device, String> {
        match backend {
            Backend::SoftHsm => {
                let token = SoftHsm::start_standalone(token_label)
                    .map_err(|e| format!("SoftHSM2 token: {e}"))?;
                let pin = std::fs::read_to_string(token.pin_file())
                    .map_err(|e| format!("{}: {e}", token.pin_file().display()))?
                    .trim()
                    .to_owned();
                Ok(Device::Token { token, pin })
            }
            Backend::Tpm => Ok(Device::Tpm(
                Swtpm::start().map_err(|e| format!("swtpm: {e}"))?,
            )),
        }
    }

    /// Its kind.
    pub fn backend(&self) -> Backend {
        match self {
            Device::Token { .. } => Backend::SoftHsm,
            Device::Tpm(_) => Backend::Tpm,
        }
    }

    /// The token, when this is one.
    pub fn token(&self) -> Option<&SoftHsm> {
        match self {
            Device::Token { token, .. } => Some(token),
            Device::Tpm(_) => None,
        }
    }

    /// What a process needs in its environment to reach the device: `SOFTHSM2_CONF` and
    /// the user PIN in `SHARD_HSM_PIN` (the shipped profile's `pin_env`) for a token;
    /// nothing for a swtpm (its profile names its TCTI).
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        match self {
            Device::Token { token, pin } => vec![
                ("SOFTHSM2_CONF", token.conf_path().as_os_str().to_owned()),
                ("SHARD_HSM_PIN", pin.into()),
            ],
            Device::Tpm(_) => Vec::new(),
        }
    }

    /// The device's secrets, which no log may show: a token's user and SO PINs.
    pub fn needles(&self) -> Vec<Needle> {
        let Device::Token { token, pin } = self else {
            return Vec::new();
        };
        let mut v = needles_for_text("token user PIN", pin);
        if let Some(so) = token
            .pin_file()
            .parent()
            .map(|d| d.join("so.pin"))
            .and_then(|p| std::fs::read_to_string(p).ok())
        {
            v.extend(needles_for_text("token SO PIN", &so));
        }
        v
    }
}
