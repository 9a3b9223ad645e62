//! The enroller: user registry and credential checks, login certificates, key
//! generation, split and distribution to the custodians, and token-signed manifests.
//!
//! | module | what it holds |
//! |---|---|
//! | [`routes`] | the HTTP API, one module per capability (accounts, enrollment, ops) |
//! | [`distribute`] | deposits at every custodian at once, and taking shards back on failure |
//! | [`refresh`] | proactive refresh of a signing key, two-phase with a durable job row |
//! | [`dkg`] | coordinating the custodians' distributed key generation (public values only) |
//! | [`users`] | the user database: invitations, TOTP steps, locks and per-source limits |
//! | [`password`] | the password policy and peppered Argon2id hashing |
//! | [`totp`] | RFC 6238 codes |
//! | [`token`] | the PKCS#11 token's keys: manifest signing, user CA, pepper, TOTP sealing |
//! | [`checks`] | scheduled share checks at every custodian (verdicts, never shares) |
//! | [`config`] | the configuration file |
//!
//! The binary (`enroller init | serve | health`) is a thin shell over this library; the
//! only `unsafe` of the program (locking its memory) lives there.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod checks;
pub mod config;
pub mod distribute;
pub mod dkg;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod password;
pub mod refresh;
pub mod reshare;
pub mod routes;
pub mod set;
pub mod token;
pub mod totp;
pub mod users;
