//! Threshold cryptography beside [`shard`](../shard/index.html): pure functions over
//! shares, no I/O, no device, no network. The services call into it; it calls nothing.
//!
//! This crate is the room the next capabilities are built in, so that none of them lands
//! in a service crate:
//!
//! | capability | what goes here | crates it wraps |
//! |---|---|---|
//! | threshold signing | key packages, signing rounds, aggregation with cheater detection | `frost-ed25519`, `frost-secp256k1-tr`, `frost-p256` (`=3.0`) |
//! | keys born distributed | the DKG rounds a custodian runs | the same |
//! | epochs | sharings of zero (refresh), Lagrange-weighted re-sharing (reshare, repair), Feldman checks | the same, `blahaj` for bytes |
//! | the release gate | OPRF key shares, the combination of `t` evaluations, unlock tags | `voprf` 0.5 (RFC 9497) |
//!
//! # Threshold signing
//!
//! One API over the three [`Kind`]s: every value carries its kind, and an
//! operation given values of different kinds refuses them
//! ([`Error::KindMismatch`]). Values cross the API as FROST's own bytes
//! (`decode`, `as_bytes`; `expose` for the secret ones, to be sealed), except
//! [`Nonces`] and the DKG secrets, which never leave memory.
//!
//! - Storage: a holder's [`KeyEnvelope`] (key package, public key package, commitment),
//!   which decodes only when the package passes Feldman's check; and
//!   [`PublicKeyPackage::holder_digests`], what a signed manifest records per holder.
//! - Keys: [`deal`] a fresh key or [`import`] one, `t`-of-`n` among holders
//!   `1..=n`; or run the DKG ([`dkg::part1`], [`dkg::part2`], [`dkg::part3`]).
//!   A holder checks its [`KeyPackage`] against the group's [`Commitment`]
//!   before acknowledging it.
//! - Signing: [`commit`], [`SigningPackage::new`], [`sign`], [`aggregate`]
//!   (naming cheaters), [`GroupKey::verify`].
//! - Output: each ecosystem's encoding ([`Signature`], [`GroupKey`]), so that
//!   OpenSSL verifies the Ed25519 signatures and libsecp256k1 the BIP340 ones.
//!
//! Randomness comes from the caller ([`SeededRng`]); the crate reads none.
//! Checked against the RFC 9591 test vectors in `threshold/tests/vectors/`.
//!
//! # Not yet protected
//!
//! The custodians hold key packages through this crate (sealed at rest, decoded for a
//! signing session); what follows is still open, and the README says so too.
//!
//! - Secrets are kept as FROST's serialized bytes in zeroizing buffers, but FROST's
//!   serializer grows a plain `Vec` and its decoder copies scalars through stack buffers,
//!   so freed, unwiped copies of key packages, nonces and DKG secrets can remain in memory.
//!   The fix is to hold FROST's own structs (which wipe themselves) instead of bytes.
//! - [`commit`] uses exactly the generator it is given: the same seed with the same key
//!   package gives the same nonces, and two messages signed with them reveal the share.
//!   Callers must seed a fresh generator for every commitment.
//! - `secp256k1-tr` keys from the DKG carry the BIP341 tweak; dealt and imported keys do
//!   not. Both verify as plain BIP340 keys; an imported wallet key signs under its internal
//!   key, not its tweaked output key.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod dkg;
mod envelope;
mod error;
mod holder;
mod keys;
mod kind;
mod raw;
pub mod reshare;
mod rng;
mod signing;
mod suite;

pub use envelope::{
    is_key_envelope, KeyEnvelope, KEY_ENVELOPE_VERSION, MAX_HOLDERS, MAX_KEY_ENVELOPE_LEN,
};
pub use error::Error;
pub use holder::{HolderId, Threshold};
pub use keys::{deal, import, Commitment, Dealt, GroupKey, KeyPackage, PublicKeyPackage};
pub use kind::{Kind, UnknownKind};
pub use rand_core;
pub use rng::SeededRng;
pub use signing::{
    aggregate, commit, sign, Nonces, Signature, SignatureShare, SigningCommitments, SigningPackage,
};
pub use zeroize::Zeroizing;
