//! The pure core of the shard custodian system: Shamir split and combine,
//! versioned shard envelopes, salted commitments and signed manifests.
//!
//! Nothing here does I/O. Randomness comes in through a [`rand::CryptoRng`]
//! the caller builds ([`rng::mixed_rng`] mixes the token's generator in).
//!
//! The usual flow: [`split`] a [`Secret`], wrap each share in a [`ShardEnvelope`]
//! with a fresh salt, put the [`Commitment`]s in a [`Manifest`] and
//! [`Manifest::sign`] it; at recovery [`SignedManifest::verify`] the manifest and
//! [`combine_verified`] what the custodians returned.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod commitment;
mod deal;
mod envelope;
mod error;
mod id;
mod manifest;
mod recover;
pub mod rng;
mod salt;
mod secret;
mod split;

pub use commitment::Commitment;
pub use deal::{combine_envelopes, commitments, deal};
pub use envelope::{ShardEnvelope, ENVELOPE_VERSION, MAX_ENVELOPE_LEN};
pub use error::Error;
pub use id::{validate_name, CustodianId, SecretId};
pub use manifest::{
    Manifest, ManifestSigner, SecretKind, SignedManifest, MANIFEST_VERSION,
    MAX_SIGNED_MANIFEST_LEN, SIGNING_KINDS,
};
pub use p256;
pub use rand;
pub use recover::{check_returned, combine_verified, Fault, RecoverError, Recovered, Returned};
pub use salt::Salt;
pub use secret::{Secret, ShareBytes, MAX_SECRET_LEN};
pub use split::{combine, split, IndexedShare, Threshold, MAX_SHARDS};
