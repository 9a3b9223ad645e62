//! Real rustls handshakes over loopback TCP with certificates from `certs::Ca`.
//!
//! These pin the transport rules of the design: TLS 1.3 only, mutual authentication, and a
//! client from another CA (even one claiming the same trust domain), or with no certificate,
//! gets nothing beyond the handshake.

use std::time::Duration;

use certs::rustls::pki_types::pem::PemObject;
use certs::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use certs::rustls::{self, CertificateError, ClientConfig};
use certs::{Ca, Issued, Name, Role, TrustDomain};
use testkit::handshake::{self, handshake, ServerEnd};

const HOUR: Duration = Duration::from_secs(3600);

struct Pki {
    ca: Ca,
    custodian: Issued,
    enroller: Issued,
}

fn pki() -> Pki {
    let ca = Ca::init(&TrustDomain::new("example.org").unwrap()).unwrap();
    let custodian = ca
        .issue(
            Role::Custodian,
            &Name::new("c1").unwrap(),
            &["localhost".into(), "c1.example.org".into()],
            &["127.0.0.1".parse().unwrap()],
            HOUR,
        )
        .unwrap();
    let enroller = ca
        .issue(Role::Enroller, &Name::new("main").unwrap(), &[], &[], HOUR)
        .unwrap();
    Pki {
        ca,
        custodian,
        enroller,
    }
}

fn server(ca: &Ca, id: &Issued) -> rustls::ServerConfig {
    certs::tls::server_config(
        ca.cert_pem().as_bytes(),
        id.cert_pem.as_bytes(),
        id.key_pem.as_bytes(),
    )
    .unwrap()
}

fn client(ca: &Ca, id: &Issued) -> ClientConfig {
    certs::tls::client_config(
        ca.cert_pem().as_bytes(),
        id.cert_pem.as_bytes(),
        id.key_pem.as_bytes(),
    )
    .unwrap()
}

/// The refused client must have learnt nothing: no greeting, an error instead.
fn assert_client_got_nothing(outcome: &handshake::Outcome) {
    match &outcome.client {
        Ok(reply) => panic!("refused client read {reply:?}"),
        Err(e) => assert!(!e.to_string().contains("hello"), "{e}"),
    }
}

#[test]
fn mutual_tls_server_sees_client_spiffe_id() {
    let pki = pki();
    for server_name in ["localhost", "127.0.0.1", "c1.example.org"] {
        let outcome = handshake(
            server(&pki.ca, &pki.custodian),
            client(&pki.ca, &pki.enroller),
            server_name,
        );
        match &outcome.server {
            ServerEnd::Accepted(id) => {
                assert_eq!(id.to_string(), "spiffe://example.org/enroller/main");
                assert_eq!(id, &pki.enroller.spiffe_id);
            }
            other => panic!("{server_name}: server did not accept: {other:?}"),
        }
        assert_eq!(
            outcome.client.as_deref().unwrap(),
            "hello spiffe://example.org/enroller/main\n"
        );
        assert_eq!(
            outcome.server_id_seen_by_client.as_ref(),
            Some(&pki.custodian.spiffe_id),
            "the client can authorize the server by its id too"
        );
    }
}

#[test]
fn admin_and_user_clients_are_accepted_with_their_ids() {
    let pki = pki();
    for (role, name) in [(Role::Admin, "ops"), (Role::User, "alice")] {
        let id = pki
            .ca
            .issue(role, &Name::new(name).unwrap(), &[], &[], HOUR)
            .unwrap();
        let outcome = handshake(
            server(&pki.ca, &pki.custodian),
            client(&pki.ca, &id),
            "localhost",
        );
        match outcome.server {
            ServerEnd::Accepted(seen) => assert_eq!(
                seen.to_string(),
                format!("spiffe://example.org/{role}/{name}")
            ),
            other => panic!("{role}: {other:?}"),
        }
    }
}

#[test]
fn client_from_another_ca_is_refused() {
    let pki = pki();
    // A CA of the same trust domain has the same subject name, so webpki finds it as the issuer
    // and the signature check fails; a CA of another trust domain is not found at all.
    for (rogue_td, expected) in [
        ("example.org", CertificateError::BadSignature),
        ("evil.example", CertificateError::UnknownIssuer),
    ] {
        let rogue_ca = Ca::init(&TrustDomain::new(rogue_td).unwrap()).unwrap();
        let rogue = rogue_ca
            .issue(Role::Enroller, &Name::new("main").unwrap(), &[], &[], HOUR)
            .unwrap();
        // The rogue client trusts the real CA, so only the server's check can stop it.
        let rogue_client = certs::tls::client_config(
            pki.ca.cert_pem().as_bytes(),
            rogue.cert_pem.as_bytes(),
            rogue.key_pem.as_bytes(),
        )
        .unwrap();

        let outcome = handshake(server(&pki.ca, &pki.custodian), rogue_client, "localhost");
        assert_eq!(
            outcome.server_refusal(),
            Some(&rustls::Error::InvalidCertificate(expected)),
            "{rogue_td}: {outcome:?}"
        );
        assert_client_got_nothing(&outcome);
    }
}

#[test]
fn client_without_certificate_is_refused() {
    let pki = pki();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.cert_der().clone()).unwrap();
    let anonymous = ClientConfig::builder_with_provider(certs::tls::crypto_provider())
        .with_protocol_versions(certs::tls::PROTOCOL_VERSIONS)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let outcome = handshake(server(&pki.ca, &pki.custodian), anonymous, "localhost");
    assert_eq!(
        outcome.server_refusal(),
        Some(&rustls::Error::NoCertificatesPresented),
        "{outcome:?}"
    );
    assert_client_got_nothing(&outcome);
}

#[test]
fn tls12_only_client_is_refused() {
    let pki = pki();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.cert_der().clone()).unwrap();
    let chain = vec![CertificateDer::from_pem_slice(pki.enroller.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.enroller.key_pem.as_bytes()).unwrap();
    // A perfectly valid client certificate; only the protocol version is wrong.
    let tls12 = ClientConfig::builder_with_provider(certs::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();

    let outcome = handshake(server(&pki.ca, &pki.custodian), tls12, "localhost");
    assert!(
        matches!(
            outcome.server_refusal(),
            Some(rustls::Error::PeerIncompatible(_))
        ),
        "{outcome:?}"
    );
    assert!(
        matches!(
            outcome.client_tls_error(),
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::ProtocolVersion
            ))
        ),
        "{outcome:?}"
    );
}

#[test]
fn client_certificates_cannot_serve() {
    // `Ca::issue` gives admin and user certificates clientAuth only and no DNS/IP names. Build
    // such a certificate *with* the server's name, signed by the real CA, to show that the EKU
    // alone stops a stolen client certificate from impersonating a service.
    let pki = pki();
    let ca_key = rcgen::KeyPair::from_pem(pki.ca.key_pem().as_str()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(pki.ca.cert_der(), ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://example.org/admin/ops".try_into().unwrap(),
    ));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let admin_server = certs::tls::server_config(
        pki.ca.cert_pem().as_bytes(),
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
    )
    .unwrap();

    let outcome = handshake(admin_server, client(&pki.ca, &pki.enroller), "localhost");
    assert!(
        matches!(
            outcome.client_tls_error(),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
            ))
        ),
        "{outcome:?}"
    );
    assert!(!matches!(outcome.server, ServerEnd::Accepted(_)));

    // And the real admin certificate, which names no host at all, fails on the name.
    let admin = pki
        .ca
        .issue(Role::Admin, &Name::new("ops").unwrap(), &[], &[], HOUR)
        .unwrap();
    let outcome = handshake(
        server(&pki.ca, &admin),
        client(&pki.ca, &pki.enroller),
        "localhost",
    );
    assert!(outcome.client_tls_error().is_some(), "{outcome:?}");
    assert!(!matches!(outcome.server, ServerEnd::Accepted(_)));
}

#[test]
fn client_checks_server_name_and_issuer() {
    let pki = pki();
    // A name the custodian's certificate does not carry.
    let outcome = handshake(
        server(&pki.ca, &pki.custodian),
        client(&pki.ca, &pki.enroller),
        "c2.example.org",
    );
    assert!(
        matches!(
            outcome.client_tls_error(),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{outcome:?}"
    );
    assert!(!matches!(outcome.server, ServerEnd::Accepted(_)));

    // A server from another CA, even with the right name and trust domain.
    for (rogue_td, expected) in [
        ("example.org", CertificateError::BadSignature),
        ("evil.example", CertificateError::UnknownIssuer),
    ] {
        let rogue_ca = Ca::init(&TrustDomain::new(rogue_td).unwrap()).unwrap();
        let rogue_server = rogue_ca
            .issue(
                Role::Custodian,
                &Name::new("c1").unwrap(),
                &["localhost".into()],
                &[],
                HOUR,
            )
            .unwrap();
        let rogue = certs::tls::server_config(
            pki.ca.cert_pem().as_bytes(),
            rogue_server.cert_pem.as_bytes(),
            rogue_server.key_pem.as_bytes(),
        )
        .unwrap();
        let outcome = handshake(rogue, client(&pki.ca, &pki.enroller), "localhost");
        assert_eq!(
            outcome.client_tls_error(),
            Some(&rustls::Error::InvalidCertificate(expected)),
            "{rogue_td}: {outcome:?}"
        );
        assert!(!matches!(outcome.server, ServerEnd::Accepted(_)));
    }
}

#[test]
fn peer_id_is_unavailable_before_the_handshake() {
    let pki = pki();
    let conn = rustls::ServerConnection::new(std::sync::Arc::new(server(&pki.ca, &pki.custodian)))
        .unwrap();
    assert!(matches!(
        certs::tls::peer_spiffe_id(&conn),
        Err(certs::Error::NoPeerCertificate)
    ));
}
