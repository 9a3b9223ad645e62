//! The one error type of this crate.

use std::path::PathBuf;

use crate::Role;

/// Everything that can go wrong while parsing identities, issuing certificates, writing them to
/// disk or building TLS configurations.
///
/// No variant ever carries private key material. None of them is worth retrying unchanged: each
/// names an input that has to be fixed (or a file that has to be moved away) first.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A trust domain was not a lowercase DNS-like name.
    #[error("invalid trust domain {input:?}: {reason}")]
    InvalidTrustDomain {
        /// The rejected text.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A name (the last segment of a SPIFFE id) did not match `[a-z0-9][a-z0-9-]{0,62}`.
    #[error("invalid name {input:?}: {reason}")]
    InvalidName {
        /// The rejected text.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A role was not one of `custodian`, `enroller`, `admin`, `user`.
    #[error("unknown role {0:?} (expected custodian, enroller, admin or user)")]
    UnknownRole(String),

    /// A URI was not of the form `spiffe://<trust-domain>/<role>/<name>`.
    #[error("invalid SPIFFE id {input:?}: {reason}")]
    InvalidSpiffeId {
        /// The rejected text.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A certificate carries no URI subject alternative name, so it names no SPIFFE identity.
    #[error("the certificate carries no URI SAN, so it names no SPIFFE id")]
    NoSpiffeId,

    /// A certificate carries more than one URI subject alternative name; a SPIFFE certificate
    /// has exactly one, so the identity would be ambiguous.
    #[error("the certificate carries {0} URI SANs; a SPIFFE certificate has exactly one")]
    SeveralUris(usize),

    /// The input was not PEM text of the expected kind.
    #[error("not valid PEM: {0}")]
    Pem(String),

    /// PEM text held no `CERTIFICATE` block.
    #[error("no CERTIFICATE block found in the PEM text")]
    NoCertificate,

    /// PEM text held no `PRIVATE KEY` block.
    #[error("no PRIVATE KEY block found in the PEM text")]
    NoPrivateKey,

    /// A private key was not an ECDSA P-256 key in PKCS#8 form.
    #[error("the private key is not an ECDSA P-256 PKCS#8 key")]
    UnsupportedKey,

    /// A DER certificate could not be parsed as X.509.
    #[error("malformed certificate: {0}")]
    MalformedCertificate(String),

    /// A certificate given as a CA is not one (it lacks `CA:TRUE` or the keyCertSign usage).
    #[error(
        "the certificate is not a CA certificate (needs basic constraints CA:TRUE and keyCertSign)"
    )]
    NotACa,

    /// A CA certificate does not name its trust domain as a single `spiffe://<td>` URI SAN.
    #[error("the CA certificate does not name a trust domain as a single spiffe://<td> URI SAN")]
    CaWithoutTrustDomain,

    /// A CA private key does not belong to the CA certificate it was loaded with.
    #[error("the CA private key does not match the CA certificate")]
    KeyMismatch,

    /// A DNS name for a subject alternative name was not a valid DNS name.
    #[error("invalid DNS name {0:?} (expected a host name such as c1.example.org; IP addresses go in the IP list)")]
    InvalidDnsName(String),

    /// DNS or IP subject alternative names were requested for a role that only acts as a TLS
    /// client and so is never verified by name.
    #[error("{0} certificates are client-only: DNS and IP names apply to custodian and enroller")]
    ServerNamesForClientRole(Role),

    /// A requested validity period was empty, too long, or would outlive the issuing CA.
    #[error("invalid validity: {0}")]
    InvalidValidity(&'static str),

    /// A certificate signing request does not parse or its signature does not verify.
    #[error("the certificate signing request is invalid or its signature does not verify")]
    InvalidCsr,

    /// Certificate or key generation failed inside rcgen or ring.
    #[error("certificate generation failed: {0}")]
    Generation(String),

    /// The operating system's random generator failed.
    #[error("the system random number generator failed")]
    Random,

    /// A file that is only ever created new already exists; it was left untouched.
    #[error("{} already exists; refusing to overwrite it", .0.display())]
    FileExists(PathBuf),

    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// rustls refused a certificate, key or configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),

    /// The client-certificate verifier could not be built from the CA certificate.
    #[error("client certificate verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),

    /// A TLS connection has no verified peer certificate (the handshake is not complete yet).
    #[error("the TLS peer presented no certificate")]
    NoPeerCertificate,
}
