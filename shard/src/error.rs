//! The one error type of the shard core.

/// Everything the pure core can refuse. No variant carries secret or shard bytes.
///
/// None of these is retryable with the same input: each names a defect of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An identifier (secret id, custodian name) has the wrong shape.
    #[error("invalid identifier: {0}")]
    InvalidId(&'static str),
    /// `t` and `n` must satisfy `2 <= t <= n <= 16`.
    #[error("threshold {t}-of-{n} is outside 2 <= t <= n <= 16")]
    InvalidThreshold {
        /// Requested threshold.
        t: u8,
        /// Requested number of shards.
        n: u8,
    },
    /// A secret must be 1 byte to 64 KiB long.
    #[error("secret length {0} is outside 1..=65536 bytes")]
    SecretLength(usize),
    /// A shard carries index 0, which would be the secret itself.
    #[error("shard index 0 is not allowed")]
    IndexZero,
    /// A shard index is larger than `n`.
    #[error("shard index {index} is larger than n = {n}")]
    IndexOutOfRange {
        /// The index found.
        index: u8,
        /// The number of shards.
        n: u8,
    },
    /// Two shards given to combine carry the same index.
    #[error("two shards carry index {0}")]
    DuplicateIndex(u8),
    /// Shards given to combine belong to different secrets.
    #[error("shards belong to different secrets")]
    MixedSecrets,
    /// Shards given to combine come from different epochs.
    #[error("shards come from different epochs")]
    MixedEpochs,
    /// Shards given to combine disagree on `t`, `n` or length.
    #[error("shards disagree on threshold, count or length")]
    MixedParameters,
    /// Fewer shards than the threshold.
    #[error("{have} shards given, {need} needed")]
    NotEnoughShards {
        /// Distinct shards given.
        have: usize,
        /// Threshold.
        need: usize,
    },
    /// An encoding ends before its declared end.
    #[error("{0} is truncated")]
    Truncated(&'static str),
    /// An encoding is longer than its declared content, or declares a length over the maximum.
    #[error("{0} is oversized")]
    Oversized(&'static str),
    /// An encoding does not start with the expected magic bytes.
    #[error("{0} has the wrong magic bytes")]
    BadMagic(&'static str),
    /// An encoding has a format version this build does not read.
    #[error("{what} format version {version} is not supported")]
    UnsupportedVersion {
        /// Which encoding.
        what: &'static str,
        /// The version found.
        version: u8,
    },
    /// A field holds a value outside its domain (e.g. a public key not on the curve).
    #[error("invalid field: {0}")]
    InvalidField(&'static str),
    /// The manifest signature does not verify with the given key.
    #[error("manifest signature does not verify")]
    BadSignature,
    /// The signer failed (e.g. the token refused); the text names the cause, never data.
    #[error("signing failed: {0}")]
    Signer(String),
}
