//! The certificate authority of one trust domain, and the certificates it issues.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use ring::rand::SecureRandom;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use zeroize::{Zeroize, Zeroizing};

use crate::spiffe::uri_sans;
use crate::{Error, Name, Role, SpiffeId, TrustDomain};

/// How long a CA certificate is valid: ten years.
pub const CA_VALIDITY: Duration = Duration::from_secs(3652 * 24 * 60 * 60);

/// The longest validity [`Ca::issue`] accepts for a leaf certificate: ten years.
pub const MAX_LEAF_VALIDITY: Duration = CA_VALIDITY;

/// How far in the past `notBefore` is set, so that a peer whose clock runs a little behind
/// does not reject a certificate issued a moment ago.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Length of the random serial numbers, in bytes (RFC 5280 allows up to 20).
const SERIAL_LEN: usize = 16;

/// A PEM-encoded private key.
///
/// The text is wiped from memory when the value is dropped, and [`Debug`](fmt::Debug) prints
/// only a placeholder, so the key cannot end up in a log line by accident. It deliberately does
/// not implement `Display` or `Clone`.
pub struct PrivateKeyPem(Zeroizing<String>);

impl PrivateKeyPem {
    /// Wraps PEM text, e.g. read from a key file.
    pub fn new(pem: String) -> Self {
        Self(Zeroizing::new(pem))
    }

    /// The PEM text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The PEM text as bytes, e.g. to write it to a file.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem([redacted])")
    }
}

/// A freshly issued certificate and its private key.
#[derive(Debug)]
pub struct Issued {
    /// The SPIFFE id the certificate names.
    pub spiffe_id: SpiffeId,
    /// The certificate, PEM-encoded.
    pub cert_pem: String,
    /// The certificate's private key, PEM-encoded PKCS#8.
    pub key_pem: PrivateKeyPem,
}

/// The P-256 certificate authority of one trust domain.
///
/// Its certificate is self-signed, names the trust domain in its common name and as the URI SAN
/// `spiffe://<td>`, and is a CA with path length 1, so that the enroller can later hold an
/// intermediate CA for short-lived user certificates. The key pair is wiped from memory when the
/// `Ca` is dropped (as far as rcgen exposes it; ring's internal copy is not reachable).
pub struct Ca {
    trust_domain: TrustDomain,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    not_after: OffsetDateTime,
    key: KeyPair,
}

impl Ca {
    /// Creates a new CA for `trust_domain`: a fresh P-256 key and a self-signed certificate valid
    /// for [`CA_VALIDITY`] (from [`BACKDATE`] ago).
    pub fn init(trust_domain: &TrustDomain) -> Result<Self, Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generation)?;
        let now = OffsetDateTime::now_utc();

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{trust_domain} CA"));
        params.subject_alt_names = vec![SanType::URI(
            trust_domain.uri().try_into().map_err(generation)?,
        )];
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial()?);
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let not_after = params.not_after;

        let cert = params.self_signed(&key).map_err(generation)?;
        Ok(Self {
            trust_domain: trust_domain.clone(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            not_after,
            key,
        })
    }

    /// Loads a CA from its certificate and private key, both PEM.
    ///
    /// Checks that the certificate is a CA (`CA:TRUE`, keyCertSign), that it names exactly one
    /// trust domain as `spiffe://<td>`, and that the key is a P-256 key matching it.
    pub fn load(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        let cert_der = first_certificate(cert_pem)?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| Error::MalformedCertificate(e.to_string()))?;

        let is_ca = x509
            .basic_constraints()
            .map_err(|e| Error::MalformedCertificate(e.to_string()))?
            .is_some_and(|bc| bc.value.ca);
        let can_sign = x509
            .key_usage()
            .map_err(|e| Error::MalformedCertificate(e.to_string()))?
            .is_some_and(|ku| ku.value.key_cert_sign());
        if !(is_ca && can_sign) {
            return Err(Error::NotACa);
        }

        let trust_domain = match uri_sans(&x509)?.as_slice() {
            [uri] => uri
                .strip_prefix("spiffe://")
                .and_then(|td| TrustDomain::new(td).ok())
                .ok_or(Error::CaWithoutTrustDomain)?,
            _ => return Err(Error::CaWithoutTrustDomain),
        };

        let key_der =
            Zeroizing::new(
                PrivatePkcs8KeyDer::from_pem_slice(key_pem).map_err(|e| match e {
                    rustls_pki_types::pem::Error::NoItemsFound => Error::NoPrivateKey,
                    other => Error::Pem(other.to_string()),
                })?,
            );
        let key = KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &PKCS_ECDSA_P256_SHA256)
            .map_err(|_| Error::UnsupportedKey)?;
        if key.public_key_raw() != x509.public_key().subject_public_key.data.as_ref() {
            return Err(Error::KeyMismatch);
        }

        let not_after = x509.validity().not_after.to_datetime();
        let cert_pem = pem_certificate(&cert_der);
        Ok(Self {
            trust_domain,
            cert_pem,
            cert_der,
            not_after,
            key,
        })
    }

    /// The trust domain this CA issues identities for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The CA certificate, PEM-encoded: what every service and client trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER-encoded.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA's private key, PEM-encoded PKCS#8. Store it with
    /// [`write_new_private`](crate::write_new_private), ideally offline.
    pub fn key_pem(&self) -> PrivateKeyPem {
        PrivateKeyPem::new(self.key.serialize_pem())
    }

    /// The CA's key, for signing inside this crate.
    pub(crate) fn signing_key(&self) -> &KeyPair {
        &self.key
    }

    /// Issues a leaf certificate for `spiffe://<td>/<role>/<name>` with a fresh P-256 key.
    ///
    /// - Services ([`Role::is_service`]: custodian, enroller) get extended key usages
    ///   serverAuth and clientAuth, plus the given DNS and IP names so clients can verify them.
    /// - Admins and users get clientAuth only; giving them DNS or IP names is an error.
    ///
    /// The certificate has a random serial, `notBefore` [`BACKDATE`] in the past and is valid
    /// for `validity`, which must be non-zero, at most [`MAX_LEAF_VALIDITY`], and must not
    /// outlive this CA's certificate.
    pub fn issue(
        &self,
        role: Role,
        name: &Name,
        dns: &[String],
        ip: &[IpAddr],
        validity: Duration,
    ) -> Result<Issued, Error> {
        let has_server_names = !dns.is_empty() || !ip.is_empty();
        if has_server_names && !role.is_service() {
            return Err(Error::ServerNamesForClientRole(role));
        }
        if validity.is_zero() {
            return Err(Error::InvalidValidity("the validity period is zero"));
        }
        if validity > MAX_LEAF_VALIDITY {
            return Err(Error::InvalidValidity(
                "the validity period is longer than ten years",
            ));
        }
        let now = OffsetDateTime::now_utc();
        let not_after = now + validity;
        if not_after > self.not_after {
            return Err(Error::InvalidValidity(
                "the certificate would outlive the CA certificate",
            ));
        }

        let spiffe_id = SpiffeId::new(self.trust_domain.clone(), role, name.clone());
        let mut sans = vec![SanType::URI(
            spiffe_id.to_string().try_into().map_err(generation)?,
        )];
        for name in dns {
            // rustls verifies server names with webpki, so hold DNS SANs to its rules. An IP
            // address in a DNS SAN would never match: clients compare IPs against IP SANs.
            if name.parse::<IpAddr>().is_ok() {
                return Err(Error::InvalidDnsName(name.clone()));
            }
            rustls_pki_types::DnsName::try_from(name.as_str())
                .map_err(|_| Error::InvalidDnsName(name.clone()))?;
            let ia5 = name
                .clone()
                .try_into()
                .map_err(|_| Error::InvalidDnsName(name.clone()))?;
            sans.push(SanType::DnsName(ia5));
        }
        sans.extend(ip.iter().copied().map(SanType::IpAddress));

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        // The identity is the URI SAN; the subject only helps humans reading the certificate.
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, role.as_str());
        params
            .distinguished_name
            .push(DnType::CommonName, name.as_str());
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = if role.is_service() {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        params.not_before = now - BACKDATE;
        params.not_after = not_after;

        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key).map_err(generation)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generation)?;
        let cert = params.signed_by(&key, &issuer).map_err(generation)?;
        Ok(Issued {
            spiffe_id,
            cert_pem: cert.pem(),
            key_pem: PrivateKeyPem::new(key.serialize_pem()),
        })
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// The first `CERTIFICATE` block of PEM text, as DER.
pub(crate) fn first_certificate(pem: &[u8]) -> Result<CertificateDer<'static>, Error> {
    match CertificateDer::pem_slice_iter(pem).next() {
        Some(Ok(der)) => Ok(der),
        Some(Err(e)) => Err(Error::Pem(e.to_string())),
        None => Err(Error::NoCertificate),
    }
}

/// Re-encodes a DER certificate as PEM (LF line endings, like rcgen), so that a loaded CA
/// hands out canonical text whatever else its file held.
fn pem_certificate(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// A positive serial number of [`SERIAL_LEN`] random bytes from the operating system.
pub(crate) fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; SERIAL_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Random)?;
    // Clear the sign bit so the DER INTEGER is positive, and set the next one so the encoding
    // keeps its full length (no leading zero byte to strip).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

pub(crate) fn generation(e: impl fmt::Display) -> Error {
    Error::Generation(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::GeneralName;

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn ca() -> Ca {
        Ca::init(&TrustDomain::new("example.org").unwrap()).unwrap()
    }

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn parse(pem: &str) -> CertificateDer<'static> {
        first_certificate(pem.as_bytes()).unwrap()
    }

    fn sans(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<String>, Vec<Vec<u8>>) {
        let (mut uris, mut dns, mut ips) = (vec![], vec![], vec![]);
        for gn in &cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
        {
            match gn {
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(i) => ips.push(i.to_vec()),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        (uris, dns, ips)
    }

    #[test]
    fn ca_certificate_has_ca_flags_and_trust_domain() {
        let ca = ca();
        let der = parse(ca.cert_pem());
        assert_eq!(&der, ca.cert_der());
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();

        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical);
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(1));
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert!(!ku.digital_signature());
        assert!(cert.extended_key_usage().unwrap().is_none());

        assert_eq!(sans(&cert).0, vec!["spiffe://example.org".to_string()]);
        assert_eq!(cert.subject(), cert.issuer());
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "example.org CA");

        let nb = cert.validity().not_before.to_datetime();
        let na = cert.validity().not_after.to_datetime();
        let now = OffsetDateTime::now_utc();
        assert!(nb < now && nb > now - Duration::from_secs(600));
        let years = (na - nb).whole_days() / 365;
        assert_eq!(years, 10);
        assert_eq!(cert.raw_serial().len(), SERIAL_LEN);
    }

    #[test]
    fn service_certificate_has_spiffe_dns_ip_and_both_ekus() {
        let ca = ca();
        let issued = ca
            .issue(
                Role::Custodian,
                &name("c1"),
                &["c1.example.org".into(), "localhost".into()],
                &["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
                DAY * 365,
            )
            .unwrap();
        assert_eq!(
            issued.spiffe_id.to_string(),
            "spiffe://example.org/custodian/c1"
        );
        let der = parse(&issued.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();

        let (uris, dns, ips) = sans(&cert);
        assert_eq!(uris, vec!["spiffe://example.org/custodian/c1".to_string()]);
        assert_eq!(dns, vec!["c1.example.org".to_string(), "localhost".into()]);
        assert_eq!(ips.len(), 2);
        assert_eq!(ips[0], vec![127, 0, 0, 1]);
        assert_eq!(ips[1].len(), 16);

        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!eku.any && !eku.code_signing);
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca);
        assert!(!cert.is_ca());
        assert!(cert.key_usage().unwrap().unwrap().value.digital_signature());
        assert!(!cert.key_usage().unwrap().unwrap().value.key_cert_sign());

        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        assert_eq!(spiffe_id_from(&der), issued.spiffe_id);

        let nb = cert.validity().not_before.to_datetime();
        let na = cert.validity().not_after.to_datetime();
        let now = OffsetDateTime::now_utc();
        assert!(nb <= now - Duration::from_secs(60), "backdated");
        assert_eq!((na - nb).whole_days(), 365);

        assert!(issued
            .key_pem
            .as_str()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(format!("{:?}", issued.key_pem), "PrivateKeyPem([redacted])");
        assert!(!format!("{issued:?}").contains("BEGIN PRIVATE KEY"));
    }

    fn spiffe_id_from(der: &[u8]) -> SpiffeId {
        crate::spiffe_id_from_der(der).unwrap()
    }

    #[test]
    fn client_roles_get_client_auth_only() {
        let ca = ca();
        for role in [Role::Admin, Role::User] {
            let issued = ca.issue(role, &name("ops"), &[], &[], DAY).unwrap();
            let der = parse(&issued.cert_pem);
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.client_auth && !eku.server_auth, "{role}");
            let (uris, dns, ips) = sans(&cert);
            assert_eq!(uris, vec![format!("spiffe://example.org/{role}/ops")]);
            assert!(dns.is_empty() && ips.is_empty());
        }
        let err = ca
            .issue(
                Role::User,
                &name("alice"),
                &["alice.example".into()],
                &[],
                DAY,
            )
            .unwrap_err();
        assert!(matches!(err, Error::ServerNamesForClientRole(Role::User)));
        let err = ca
            .issue(
                Role::Admin,
                &name("ops"),
                &[],
                &["10.0.0.1".parse().unwrap()],
                DAY,
            )
            .unwrap_err();
        assert!(matches!(err, Error::ServerNamesForClientRole(Role::Admin)));
    }

    #[test]
    fn bad_dns_names_and_validities_are_refused() {
        let ca = ca();
        for bad in [
            "",
            "a b",
            "-x.org",
            "x..org",
            "*.*.org",
            "é.org",
            "127.0.0.1",
            "::1",
        ] {
            let err = ca
                .issue(Role::Custodian, &name("c1"), &[bad.into()], &[], DAY)
                .unwrap_err();
            assert!(matches!(err, Error::InvalidDnsName(_)), "{bad:?}: {err:?}");
        }
        let c1 = name("c1");
        for validity in [Duration::ZERO, DAY * 3653, DAY * 365 * 11] {
            let err = ca
                .issue(Role::Custodian, &c1, &[], &[], validity)
                .unwrap_err();
            assert!(matches!(err, Error::InvalidValidity(_)), "{validity:?}");
        }
    }

    #[test]
    fn serials_are_random() {
        let ca = ca();
        let serials: HashSet<Vec<u8>> = (0..8)
            .map(|i| {
                let issued = ca
                    .issue(Role::User, &name(&format!("u{i}")), &[], &[], DAY)
                    .unwrap();
                let der = parse(&issued.cert_pem);
                let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
                assert_eq!(cert.raw_serial().len(), SERIAL_LEN);
                assert_eq!(cert.raw_serial()[0] & 0xc0, 0x40);
                cert.raw_serial().to_vec()
            })
            .collect();
        assert_eq!(serials.len(), 8);
    }

    #[test]
    fn load_round_trips_and_checks_the_key() {
        let ca = ca();
        let key_pem = ca.key_pem();
        let loaded = Ca::load(ca.cert_pem().as_bytes(), key_pem.as_bytes()).unwrap();
        assert_eq!(loaded.trust_domain(), ca.trust_domain());
        assert_eq!(loaded.cert_der(), ca.cert_der());
        assert_eq!(
            loaded.cert_pem(),
            ca.cert_pem(),
            "canonical PEM re-encoding"
        );

        // A certificate issued by the loaded CA chains to the original one.
        let issued = loaded
            .issue(Role::Enroller, &name("main"), &[], &[], DAY)
            .unwrap();
        let der = parse(&issued.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());

        let other = Ca::init(&TrustDomain::new("example.org").unwrap()).unwrap();
        let err = Ca::load(ca.cert_pem().as_bytes(), other.key_pem().as_bytes()).unwrap_err();
        assert!(matches!(err, Error::KeyMismatch), "{err:?}");

        // A leaf is not a CA, and a leaf's key does not make it one.
        let err = Ca::load(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::NotACa), "{err:?}");

        // Key and certificate swapped, garbage, empty input.
        let err = Ca::load(key_pem.as_bytes(), ca.cert_pem().as_bytes()).unwrap_err();
        assert!(matches!(err, Error::NoCertificate), "{err:?}");
        let err = Ca::load(ca.cert_pem().as_bytes(), ca.cert_pem().as_bytes()).unwrap_err();
        assert!(matches!(err, Error::NoPrivateKey), "{err:?}");
        let err = Ca::load(b"garbage", b"").unwrap_err();
        assert!(matches!(err, Error::NoCertificate), "{err:?}");
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = Ca::load(broken.as_bytes(), key_pem.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::MalformedCertificate(_)), "{err:?}");
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
    }

    #[test]
    fn pem_encoding_matches_rcgen() {
        let ca = ca();
        assert_eq!(pem_certificate(ca.cert_der()), ca.cert_pem());
        for len in 0..7u8 {
            let der: Vec<u8> = (0..len).collect();
            let pem = pem_certificate(&der);
            let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(back.as_ref(), der.as_slice());
        }
    }
}
