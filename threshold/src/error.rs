//! The one error type of the threshold core.

use crate::{HolderId, Kind};

/// Everything the threshold core can refuse. No variant carries secret bytes:
/// only kinds, holder numbers and fixed words.
///
/// None of these is retryable with the same input. Where a variant names
/// holders (`culprits`), the caller can retry without them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes given as a `what` do not decode as one of that kind (truncated,
    /// altered, another kind's, or not a valid point or scalar).
    #[error("malformed {what} for {kind}")]
    Malformed {
        /// The kind the bytes were read as.
        kind: Kind,
        /// What the bytes were meant to be.
        what: &'static str,
    },
    /// Values of different kinds were given to one operation.
    #[error("a {found} {what} was given to a {expected} operation")]
    KindMismatch {
        /// The kind of the operation.
        expected: Kind,
        /// The kind of the value given.
        found: Kind,
        /// What the value was.
        what: &'static str,
    },
    /// `t` and `n` must satisfy `2 <= t <= n`.
    #[error("threshold {t}-of-{n} is outside 2 <= t <= n")]
    InvalidThreshold {
        /// Requested threshold.
        t: u16,
        /// Requested number of holders.
        n: u16,
    },
    /// A holder number is `0`, larger than `n`, or not one the value can name.
    #[error("holder {0} is not one of 1..=n")]
    InvalidHolder(u16),
    /// The private key given to import is not a valid key of the kind.
    #[error("the private key to import is not a valid {0} key")]
    InvalidPrivateKey(Kind),
    /// Round 2: the signing package carries no commitment from this holder,
    /// so it was not built for this holder's round 1.
    #[error("the signing package holds no commitment from holder {0}")]
    CommitmentMissing(HolderId),
    /// Round 2: the signing package carries a commitment for this holder that
    /// is not the one these nonces made (altered, or replayed from another
    /// session). Nothing was signed; the nonces are gone.
    #[error(
        "the signing package holds a commitment for holder {0} that these nonces did not make"
    )]
    CommitmentAltered(HolderId),
    /// Aggregation: these holders' signature shares do not verify against
    /// their public shares. Retry with another subset.
    #[error("invalid signature shares from holders {culprits:?}")]
    InvalidShares {
        /// The holders whose shares are invalid.
        culprits: Vec<HolderId>,
    },
    /// DKG: a holder's round-1 proof of knowledge or round-2 share is invalid.
    /// The run must be restarted without it.
    #[error("holder {culprit} sent an invalid DKG package")]
    DkgCheater {
        /// The holder whose package failed.
        culprit: HolderId,
    },
    /// A key package does not match the group's public commitment
    /// (`share·G` is not the commitment evaluated at the holder), or the
    /// group key it names is not the commitment's.
    #[error("the key package does not match the group's commitment")]
    ShareMismatch,
    /// The signature does not verify against the group key.
    #[error("the signature does not verify against the group key")]
    InvalidSignature,
    /// The set of holders or packages does not fit the operation (too few,
    /// unknown or duplicated holders, a missing package).
    #[error("wrong participants: {0}")]
    Participants(&'static str),
}
