//! The one error type of the sealing layer.

/// Every way sealing or unsealing can fail. No variant carries shard bytes,
/// PINs, auth values or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The blob is truncated, has the wrong magic or format version, or a bad length.
    /// Not retryable.
    #[error("sealed blob is malformed: {0}")]
    Malformed(&'static str),
    /// The blob was sealed for another context (custodian, secret, index or epoch).
    /// Not retryable.
    #[error("sealed blob belongs to another context")]
    ContextMismatch,
    /// Authentication of the blob failed: it was altered after sealing. Not retryable.
    #[error("sealed blob failed its integrity check")]
    Integrity,
    /// The blob was sealed by another device's key set. Not retryable here.
    #[error("sealed blob comes from another device")]
    ForeignDevice,
    /// The blob names a key version this device does not have. Not retryable.
    #[error("unknown key version {0}")]
    UnknownKeyVersion(u32),
    /// The sealing key is missing from the device (not provisioned, or deleted).
    #[error("sealing key {label} is missing from the device; run provisioning")]
    KeyMissing {
        /// Label or handle of the missing key.
        label: String,
    },
    /// The device refused the PIN or auth value.
    #[error("the device refused the PIN")]
    WrongPin,
    /// The device cannot be reached or loaded (module missing, TPM not running).
    /// Retryable once the device is back.
    #[error("device unavailable: {0}")]
    DeviceUnavailable(String),
    /// No token with the configured label is present.
    #[error("no token labelled {0:?} is present")]
    TokenNotFound(String),
    /// The device lacks a mechanism the profile asks for.
    #[error("device does not support {0}")]
    Unsupported(String),
    /// The profile names a backend (`pkcs11` or `tpm`) that this program was built
    /// without (its cargo feature was off). Not retryable: use a build that includes
    /// the backend, or a profile for one it has.
    #[error("backend {0:?} is not built into this program")]
    BackendNotBuilt(&'static str),
    /// The profile is invalid: names the key and the problem.
    #[error("profile: {0}")]
    Profile(String),
    /// The PIN source (file or environment variable) could not be read.
    #[error("PIN source: {0}")]
    PinSource(String),
    /// The shard is empty or larger than [`crate::MAX_SHARD_LEN`].
    #[error("shard length {0} is outside 1..={max}", max = crate::MAX_SHARD_LEN)]
    ShardLength(usize),
    /// Any other device error, with the device's return code (never data).
    #[error("device error: {0}")]
    Device(String),
}
