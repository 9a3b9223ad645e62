//! The custodian service: deposit (enroller only), seal with the device, store the
//! sealed blob durably, release only to the owning user, delete, audit.
//!
//! The binary (`custodian init | serve | audit verify | rotate | reseal`) is a thin
//! shell over this library; integration tests drive the binary as a real process.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod dkg;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod journal;
pub mod metrics;
pub mod ratelimit;
pub mod reshare;
pub mod routes;
pub mod server;
pub mod sessions;
pub mod store;
