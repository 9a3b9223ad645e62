//! The project's PKI: one P-256 certificate authority per trust domain, SPIFFE-named
//! certificates for services and users, and the mutual-TLS configurations every hop uses.
//!
//! - [`TrustDomain`], [`Role`], [`Name`] and [`SpiffeId`] parse and print identities of the form
//!   `spiffe://<trust-domain>/<role>/<name>`; [`spiffe_id_from_der`] reads the one a certificate
//!   carries.
//! - [`Ca`] creates or loads the CA and [`Ca::issue`]s leaf certificates.
//! - [`summary`] describes a certificate for people.
//! - [`write_new_private`] and [`write_new_public`] put keys and certificates on disk without
//!   ever overwriting a file.
//! - [`tls`] builds rustls server and client configurations (TLS 1.3, client certificates
//!   required) and extracts the verified peer's SPIFFE id.
//!
//! The library never prints; callers own every word a user reads.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod ca;
mod error;
mod files;
pub mod login;
mod spiffe;
mod summary;
pub mod tls;

pub use ca::{Ca, Issued, PrivateKeyPem, BACKDATE, CA_VALIDITY, MAX_LEAF_VALIDITY};
pub use error::Error;
pub use files::{write_new_private, write_new_public, PRIVATE_MODE, PUBLIC_MODE};
pub use spiffe::{spiffe_id_from_der, Name, Role, SpiffeId, TrustDomain};
pub use summary::{summary, CertSummary};

/// The rustls this crate builds its configurations with, so callers use the same version.
pub use rustls;
