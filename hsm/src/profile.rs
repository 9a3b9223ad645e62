//! Device profiles: one TOML file per device family, in `hsm-profiles/`, read by [`conf`]
//! (a regular file of at most 1 MiB; unknown keys refused). No key is overridden by the
//! environment or a flag, and paths are taken as written. The one variable a profile
//! consults, `TPM2TOOLS_TCTI`, is a fallback *below* the file: it serves only when the
//! profile sets no `tcti` ([`TpmProfile::effective_tcti`]), as with the TPM2 tools.
//!
//! ```toml
//! backend = "pkcs11"
//! description = "SoftHSM2 2.6"
//!
//! [pkcs11]
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! token_label = "custodian"
//! pin_env = "SHARD_HSM_PIN"        # or pin_file = "/etc/shard/pin"; never on a command line
//! key_label = "shard-seal"
//! mechanism = "aes-gcm"            # or "aes-cbc-pad-hmac"
//! ```
//!
//! ```toml
//! backend = "tpm"
//!
//! [tpm]
//! tcti = "swtpm:host=127.0.0.1,port=2321"   # optional; TPM2TOOLS_TCTI, then the default device
//! primary_handle = 0x81000100
//! parameter_encryption = false
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::{Error, Mechanism};

/// A parsed device profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// A PKCS#11 token.
    Pkcs11(Pkcs11Profile),
    /// A TPM 2.0 through the TSS.
    Tpm(TpmProfile),
}

/// Settings for a PKCS#11 token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Profile {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Label of the token; slots are found by label because SoftHSM renumbers them.
    pub token_label: String,
    /// Where the user PIN comes from.
    #[serde(flatten)]
    pub pin: PinSource,
    /// Base label of the sealing keys; version k is `<key_label>/v<k>`.
    pub key_label: String,
    /// `aes-gcm` or `aes-cbc-pad-hmac`.
    pub mechanism: Mechanism,
    /// Number of logged-in sessions kept open (default 4).
    #[serde(default = "default_sessions")]
    pub sessions: usize,
}

fn default_sessions() -> usize {
    4
}

/// Settings for a TPM 2.0.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmProfile {
    /// TCTI configuration string; when absent, `TPM2TOOLS_TCTI`, then `device:/dev/tpmrm0`.
    #[serde(default)]
    pub tcti: Option<String>,
    /// Persistent handle of the storage primary for key version 1 (0x81000000..=0x817FFFFF);
    /// version k lives at `primary_handle + k - 1`.
    pub primary_handle: u32,
    /// Use a salted, parameter-encrypting session (for discrete TPMs on a shared bus).
    #[serde(default)]
    pub parameter_encryption: bool,
}

impl TpmProfile {
    /// The TCTI string to use: the profile's, else `TPM2TOOLS_TCTI`, else the kernel resource manager.
    pub fn effective_tcti(&self) -> String {
        self.tcti
            .clone()
            .or_else(|| std::env::var("TPM2TOOLS_TCTI").ok())
            .unwrap_or_else(|| "device:/dev/tpmrm0".to_owned())
    }
}

/// Where a PIN is read from. Never a command-line argument: those show in `ps`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum PinSource {
    /// A file holding the PIN (trailing newline ignored); should be mode 0600.
    #[serde(rename = "pin_file")]
    File(PathBuf),
    /// An environment variable holding the PIN.
    #[serde(rename = "pin_env")]
    Env(String),
}

impl PinSource {
    /// Reads the PIN. The error names the source, never the value.
    pub fn read(&self) -> Result<Zeroizing<String>, Error> {
        let mut pin =
            match self {
                PinSource::File(p) => Zeroizing::new(std::fs::read_to_string(p).map_err(|e| {
                    Error::PinSource(format!("cannot read PIN file {}: {e}", p.display()))
                })?),
                PinSource::Env(v) => Zeroizing::new(std::env::var(v).map_err(|_| {
                    Error::PinSource(format!("environment variable {v} is not set"))
                })?),
            };
        while pin.ends_with('\n') || pin.ends_with('\r') {
            pin.pop();
        }
        if pin.is_empty() {
            return Err(Error::PinSource("the PIN is empty".into()));
        }
        Ok(pin)
    }
}

/// The file as written: the backend names which of the two tables applies.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    backend: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    notes: Option<String>,
    pkcs11: Option<Pkcs11Profile>,
    tpm: Option<TpmProfile>,
}

impl conf::Section for RawProfile {}

impl Profile {
    /// Parses a profile from TOML text.
    pub fn from_toml(text: &str) -> Result<Profile, Error> {
        let raw = conf::Loader::new(Path::new("profile"))
            .text(text)
            .load()
            .map_err(|e: conf::Error| Error::Profile(e.kind.to_string()))?;
        Profile::from_raw(raw)
    }

    /// The profile a parsed file describes.
    fn from_raw(raw: RawProfile) -> Result<Profile, Error> {
        let p = match (raw.backend.as_str(), raw.pkcs11, raw.tpm) {
            ("pkcs11", Some(p), None) => Profile::Pkcs11(p),
            ("tpm", None, Some(t)) => Profile::Tpm(t),
            ("pkcs11", _, _) => {
                return Err(Error::Profile(
                    "backend = \"pkcs11\" needs exactly a [pkcs11] table".into(),
                ))
            }
            ("tpm", _, _) => {
                return Err(Error::Profile(
                    "backend = \"tpm\" needs exactly a [tpm] table".into(),
                ))
            }
            _ => {
                return Err(Error::Profile(
                    "backend is not one of \"pkcs11\", \"tpm\"".into(),
                ))
            }
        };
        p.validate()?;
        Ok(p)
    }

    /// Reads and parses a profile file.
    pub fn load(path: &Path) -> Result<Profile, Error> {
        let raw = conf::Loader::new(path)
            .load()
            .map_err(|e: conf::Error| Error::Profile(format!("{}: {}", path.display(), e.kind)))?;
        Profile::from_raw(raw).map_err(|e| match e {
            Error::Profile(m) => Error::Profile(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    fn validate(&self) -> Result<(), Error> {
        match self {
            Profile::Pkcs11(p) => {
                if p.token_label.is_empty() || p.token_label.len() > 32 {
                    return Err(Error::Profile(
                        "pkcs11.token_label must be 1 to 32 characters".into(),
                    ));
                }
                if p.key_label.is_empty() || p.key_label.len() > 48 {
                    return Err(Error::Profile(
                        "pkcs11.key_label must be 1 to 48 characters".into(),
                    ));
                }
                if !(1..=64).contains(&p.sessions) {
                    return Err(Error::Profile("pkcs11.sessions must be 1 to 64".into()));
                }
                if p.mechanism == Mechanism::TpmSeal {
                    return Err(Error::Profile(
                        "pkcs11.mechanism must be aes-gcm or aes-cbc-pad-hmac".into(),
                    ));
                }
            }
            Profile::Tpm(t) => {
                if !(0x8100_0000..=0x817F_FF00).contains(&t.primary_handle) {
                    return Err(Error::Profile(
                        "tpm.primary_handle must be an owner persistent handle 0x81000000..=0x817FFF00".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds_and_names_problems() {
        let p = Profile::from_toml(
            "backend = \"pkcs11\"\n[pkcs11]\nmodule = \"/m.so\"\ntoken_label = \"t\"\npin_env = \"PIN\"\nkey_label = \"k\"\nmechanism = \"aes-gcm\"\n",
        )
        .unwrap();
        match p {
            Profile::Pkcs11(p) => {
                assert_eq!(p.pin, PinSource::Env("PIN".into()));
                assert_eq!(p.sessions, 4);
            }
            _ => panic!("wrong kind"),
        }
        let t =
            Profile::from_toml("backend = \"tpm\"\n[tpm]\nprimary_handle = 0x81000100\n").unwrap();
        assert!(matches!(t, Profile::Tpm(_)));
        let e = Profile::from_toml("backend = \"tpm\"\n[tpm]\nprimary_handle = 5\n").unwrap_err();
        assert!(e.to_string().contains("primary_handle"), "{e}");
        let e = Profile::from_toml("backend = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("backend"), "{e}");
        let e = Profile::from_toml(
            "backend = \"tpm\"\n[tpm]\nprimary_handle = 0x81000100\nbogus = 1\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}
