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
//! It holds no code yet: each capability arrives with its tests and the published test
//! vectors (RFC 9591, RFC 9497) kept as files under `threshold/tests/vectors/`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod holder;
mod kind;

pub use error::Error;
pub use holder::{HolderId, Threshold};
pub use kind::{Kind, UnknownKind};
