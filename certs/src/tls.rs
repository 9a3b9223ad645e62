//! Mutual TLS the way every hop of the system speaks it.
//!
//! - TLS 1.3 only, on both sides.
//! - The server requires a client certificate that chains to the trust domain's CA
//!   ([`WebPkiClientVerifier`]); anonymous clients and clients of any other CA fail the handshake.
//! - The client trusts only that CA (no system roots) and always presents its own certificate.
//! - The ring provider is passed explicitly to every builder, so these configurations never
//!   depend on (or install) a process-wide default provider.
//!
//! After the handshake, authorize the peer by its SPIFFE id ([`peer_spiffe_id`]): rustls has
//! then verified the chain, so the id in its URI SAN is what the CA vouched for. A client that
//! talks to a particular service should check the server's id the same way, e.g. that it really
//! reached `custodian/c1` and not another custodian holding a valid certificate.
//!
//! ```no_run
//! # fn serve(ca: &[u8], cert: &[u8], key: &[u8], conn: rustls::ServerConnection) -> Result<(), certs::Error> {
//! use std::sync::Arc;
//! let server = Arc::new(certs::tls::server_config(ca, cert, key)?);
//! // ... accept a TCP stream, run `rustls::ServerConnection::new(server.clone())` over it,
//! // complete the handshake, then:
//! let peer = certs::tls::peer_spiffe_id(&conn)?;
//! if peer.role() != certs::Role::Enroller { /* refuse */ }
//! # Ok(()) }
//! ```

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, CommonState, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, SpiffeId};

/// The only protocol version this system speaks.
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The crypto provider every configuration here is built with: rustls' ring provider.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a server configuration: TLS 1.3 only, client certificates required and verified
/// against the CA(s) in `ca_pem`, presenting the chain in `cert_pem` (leaf first) with the key in
/// `key_pem`.
///
/// The result can be adjusted further (e.g. ALPN) before it is wrapped in an `Arc`.
pub fn server_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<ServerConfig, Error> {
    let provider = crypto_provider();
    let roots = Arc::new(root_store(ca_pem)?);
    // The builder's default refuses anonymous clients; that default is the point.
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone()).build()?;
    let (chain, key) = identity(cert_pem, key_pem)?;
    Ok(ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?)
}

/// Builds a client configuration: TLS 1.3 only, trusting only the CA(s) in `ca_pem`, and
/// presenting the chain in `cert_pem` (leaf first) with the key in `key_pem`.
///
/// The server is verified by the name passed to `rustls::ClientConnection::new`, which must be
/// one of its DNS or IP SANs.
pub fn client_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<ClientConfig, Error> {
    let roots = root_store(ca_pem)?;
    let (chain, key) = identity(cert_pem, key_pem)?;
    Ok(ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?)
}

/// The SPIFFE id of the verified peer of a connection whose handshake is complete.
///
/// Accepts a `rustls::ServerConnection` (the client's id) or a `rustls::ClientConnection` (the
/// server's id) through deref. Fails with [`Error::NoPeerCertificate`] before the handshake has
/// completed.
pub fn peer_spiffe_id(conn: &CommonState) -> Result<SpiffeId, Error> {
    chain_spiffe_id(conn.peer_certificates().unwrap_or_default())
}

/// The SPIFFE id of the end-entity certificate (the first) of a verified peer chain.
pub fn chain_spiffe_id(chain: &[CertificateDer<'_>]) -> Result<SpiffeId, Error> {
    let leaf = chain.first().ok_or(Error::NoPeerCertificate)?;
    crate::spiffe_id_from_der(leaf)
}

/// Every certificate in `ca_pem`, as trust anchors. Several CAs may be given during a rotation.
fn root_store(ca_pem: &[u8]) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(der.map_err(|e| Error::Pem(e.to_string()))?)?;
    }
    if roots.is_empty() {
        return Err(Error::NoCertificate);
    }
    Ok(roots)
}

/// A certificate chain and its private key from PEM.
fn identity(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem(e.to_string()))?;
    if chain.is_empty() {
        return Err(Error::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => Error::NoPrivateKey,
        other => Error::Pem(other.to_string()),
    })?;
    Ok((chain, key))
}

/// Builds a server configuration like [`server_config`] except that a client may also
/// connect **without** a certificate (TLS 1.3 only still). Only the enroller uses it,
/// for registration and login; every handler that needs an identity must then check
/// that the connection has one.
pub fn server_config_optional_client(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<ServerConfig, Error> {
    let provider = crypto_provider();
    let roots = Arc::new(root_store(ca_pem)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .allow_unauthenticated()
        .build()?;
    let (chain, key) = identity(cert_pem, key_pem)?;
    Ok(ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?)
}

/// Whether a verified peer chain consists of its leaf alone, issued by the CA in
/// `ca_pem` itself (the leaf's issuer name is the CA's subject name).
///
/// Services require this of every role but `user`: user login certificates come
/// through the enroller's intermediate user CA, everything else straight from the
/// trust domain's CA. A leaf presented alone can only chain to a trust anchor, so a
/// certificate minted by the intermediate cannot pass as a custodian, enroller or
/// admin (the intermediate's subject differs from the CA's).
pub fn issued_directly_by(chain: &[CertificateDer<'_>], ca_pem: &[u8]) -> bool {
    let [leaf] = chain else { return false };
    let Ok((_, leaf)) = x509_parser::parse_x509_certificate(leaf) else {
        return false;
    };
    // Every CA in the file counts (several are trusted during a CA rotation).
    CertificateDer::pem_slice_iter(ca_pem).flatten().any(|ca| {
        x509_parser::parse_x509_certificate(&ca)
            .is_ok_and(|(_, ca)| leaf.issuer().as_raw() == ca.subject().as_raw())
    })
}

/// Builds a client configuration that presents **no** certificate: TLS 1.3 only,
/// trusting only the CA(s) in `ca_pem`. For registering and logging in at the
/// enroller, before the user has a certificate.
pub fn client_config_anonymous(ca_pem: &[u8]) -> Result<ClientConfig, Error> {
    let roots = root_store(ca_pem)?;
    Ok(ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Ca, Name, Role, TrustDomain};

    #[test]
    fn configs_build_from_issued_pem() {
        let ca = Ca::init(&TrustDomain::new("example.org").unwrap()).unwrap();
        let issued = ca
            .issue(
                Role::Custodian,
                &Name::new("c1").unwrap(),
                &["localhost".into()],
                &[],
                Duration::from_secs(3600),
            )
            .unwrap();
        let ca_pem = ca.cert_pem().as_bytes();
        let (cert, key) = (issued.cert_pem.as_bytes(), issued.key_pem.as_bytes());

        // Behaviour (versions, client-certificate demands) is pinned by tests/mtls.rs; here only
        // that well-formed inputs build and the client really carries its certificate.
        server_config(ca_pem, cert, key).unwrap();
        let client = client_config(ca_pem, cert, key).unwrap();
        assert!(client.client_auth_cert_resolver.has_certs());
        assert!(client.enable_sni);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let ca = Ca::init(&TrustDomain::new("example.org").unwrap()).unwrap();
        let issued = ca
            .issue(
                Role::Admin,
                &Name::new("ops").unwrap(),
                &[],
                &[],
                Duration::from_secs(3600),
            )
            .unwrap();
        let ca_pem = ca.cert_pem().as_bytes();
        let (cert, key) = (issued.cert_pem.as_bytes(), issued.key_pem.as_bytes());
        assert!(matches!(
            server_config(b"", cert, key),
            Err(Error::NoCertificate)
        ));
        assert!(matches!(
            client_config(ca_pem, b"", key),
            Err(Error::NoCertificate)
        ));
        assert!(matches!(
            client_config(ca_pem, cert, cert),
            Err(Error::NoPrivateKey)
        ));
        // A key that does not belong to the certificate.
        let other = ca
            .issue(
                Role::Admin,
                &Name::new("other").unwrap(),
                &[],
                &[],
                Duration::from_secs(3600),
            )
            .unwrap();
        assert!(matches!(
            client_config(ca_pem, cert, other.key_pem.as_bytes()),
            Err(Error::Tls(_))
        ));
        assert!(matches!(
            chain_spiffe_id(&[]),
            Err(Error::NoPeerCertificate)
        ));
    }
}
