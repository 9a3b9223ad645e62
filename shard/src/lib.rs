//! The pure core of the shard custodian system: Shamir split and combine,
//! versioned shard envelopes, salted commitments and signed manifests.
//!
//! Nothing here does I/O. Randomness comes in through [`rand::CryptoRng`]
//! values the caller builds (the enroller mixes its token's generator in).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod id;

pub use error::Error;
pub use id::{validate_name, CustodianId, SecretId};
