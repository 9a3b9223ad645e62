//! Sealing backends for custodians.
//!
//! A custodian never stores a shard in the clear: it hands the shard to a
//! [`Sealer`], which encrypts it under a key that lives inside a PKCS#11 token
//! ([`pkcs11::Pkcs11Sealer`]) or a TPM 2.0 ([`tpm::TpmSealer`]) and returns an
//! opaque blob. Every blob is bound to its [`SealContext`] (custodian, secret,
//! shard index, epoch) and to the key version and blob format version in its
//! header, so a blob moved to another row, index or custodian does not unseal.
//!
//! Which backend and which device settings are used comes from a
//! [`profile::Profile`] (one TOML file per device family in `hsm-profiles/`).
//!
//! # Features
//!
//! Each backend is a cargo feature, both on by default: `pkcs11` (cryptoki) and `tpm`
//! (tss-esapi, which links the system's tpm2-tss libraries). A program that needs one
//! backend depends with `default-features = false, features = ["pkcs11"]` and builds
//! nothing of the other; [`open`] then answers a profile naming the missing backend
//! with [`Error::BackendNotBuilt`]. Profiles of either kind parse in every build.
//! `testing` adds the device harnesses of [`testing`] (SoftHSM2 with `pkcs11`).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod blob;
mod error;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod profile;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tpm")]
pub mod tpm;

pub use blob::{BlobHeader, Mechanism, SealContext, FORMAT_VERSION};
pub use error::Error;
pub use profile::{PinSource, Profile};

use zeroize::Zeroizing;

/// The largest shard a sealer accepts: a 64 KiB secret plus the envelope around it.
pub const MAX_SHARD_LEN: usize = 64 * 1024 + 1024;

/// What a sealer says about itself: safe to log and to show in health output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Backend kind, `pkcs11` or `tpm`.
    pub backend: &'static str,
    /// Human-readable device description (token label and model, or TPM manufacturer).
    pub device: String,
    /// Label (PKCS#11) or persistent handle (TPM) of the current sealing key.
    pub key_label: String,
    /// Current key version, used for new seals.
    pub key_version: u32,
    /// Mechanism used for new seals.
    pub mechanism: Mechanism,
    /// Random 16-byte id of this device's key set, written into every blob header
    /// so that a blob from another device is recognised as such.
    pub device_id: [u8; 16],
}

/// One sealing device. Implementations serialize access to the device internally,
/// so a sealer can be shared between threads.
///
/// All calls block; async services call them from a blocking thread pool.
pub trait Sealer: Send + Sync {
    /// Encrypts `shard` under the current key version, bound to `ctx`.
    fn seal(&self, ctx: &SealContext, shard: &[u8]) -> Result<Vec<u8>, Error>;

    /// Decrypts a blob made by [`Sealer::seal`] for the same `ctx` on this device.
    fn unseal(&self, ctx: &SealContext, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error>;

    /// Creates the device key(s) when missing. Idempotent: a second call changes nothing.
    fn provision(&self) -> Result<DeviceInfo, Error>;

    /// What device, key and mechanism this sealer uses.
    fn describe(&self) -> Result<DeviceInfo, Error>;

    /// Checks that the device answers and the current key is usable.
    fn health(&self) -> Result<(), Error>;

    /// Creates key version k+1 and makes it the one new seals use; older versions
    /// keep unsealing. Returns the new version.
    fn rotate(&self) -> Result<u32, Error>;

    /// Re-seals `blob` under the current key version. Returns `None` when it already
    /// uses the current version.
    fn reseal(&self, ctx: &SealContext, blob: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let header = BlobHeader::decode(blob)?.0;
        if header.key_version == self.describe()?.key_version {
            return Ok(None);
        }
        let shard = self.unseal(ctx, blob)?;
        self.seal(ctx, &shard).map(Some)
    }
}

/// Fills `buf` from the operating system's generator (salts, IVs, data keys, device
/// ids); a failing generator is a device error, never a weak value.
#[cfg(any(feature = "pkcs11", feature = "tpm"))]
fn os_random(buf: &mut [u8]) -> Result<(), Error> {
    use rand::TryRng;
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .map_err(|e| Error::Device(format!("operating system random generator: {e}")))
}

/// Opens the sealer a profile describes (does not provision it). A profile whose
/// backend this build leaves out (see the crate's features) is
/// [`Error::BackendNotBuilt`].
pub fn open(profile: &Profile) -> Result<Box<dyn Sealer>, Error> {
    match profile {
        #[cfg(feature = "pkcs11")]
        Profile::Pkcs11(p) => Ok(Box::new(pkcs11::Pkcs11Sealer::open(p)?)),
        #[cfg(not(feature = "pkcs11"))]
        Profile::Pkcs11(_) => Err(Error::BackendNotBuilt("pkcs11")),
        #[cfg(feature = "tpm")]
        Profile::Tpm(p) => Ok(Box::new(tpm::TpmSealer::open(p)?)),
        #[cfg(not(feature = "tpm"))]
        Profile::Tpm(_) => Err(Error::BackendNotBuilt("tpm")),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(not(feature = "tpm"))]
    #[test]
    fn tpm_profile_without_the_tpm_backend_is_a_typed_error() {
        use crate::{open, Error, Profile};
        let p = Profile::from_toml("backend = \"tpm\"\n[tpm]\nprimary_handle = 0x81000100\n")
            .expect("a valid TPM profile");
        assert!(matches!(open(&p), Err(Error::BackendNotBuilt("tpm"))));
    }

    #[cfg(not(feature = "pkcs11"))]
    #[test]
    fn pkcs11_profile_without_the_pkcs11_backend_is_a_typed_error() {
        use crate::{open, Error, Profile};
        let p = Profile::from_toml(
            "backend = \"pkcs11\"\n[pkcs11]\nmodule = \"/m.so\"\ntoken_label = \"t\"\n\
             pin_env = \"PIN\"\nkey_label = \"k\"\nmechanism = \"aes-gcm\"\n",
        )
        .expect("a valid PKCS#11 profile");
        let e = open(&p).err().expect("no sealer without the backend");
        assert!(matches!(e, Error::BackendNotBuilt("pkcs11")), "{e}");
        assert_eq!(
            e.to_string(),
            "backend \"pkcs11\" is not built into this program"
        );
    }
}
