//! A human-readable digest of one certificate.

use std::fmt;
use std::net::IpAddr;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use crate::ca::first_certificate;
use crate::{Error, SpiffeId};

/// What matters about a certificate, for people and for scripts.
///
/// [`Display`](fmt::Display) renders one `label: value` line per field.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertSummary {
    /// The subject distinguished name, RFC 4514 style (e.g. `OU=custodian, CN=c1`).
    pub subject: String,
    /// The issuer distinguished name.
    pub issuer: String,
    /// The serial number, lowercase hex without separators.
    pub serial_hex: String,
    /// Start of the validity period.
    pub not_before: OffsetDateTime,
    /// End of the validity period.
    pub not_after: OffsetDateTime,
    /// The SPIFFE id, when the certificate carries exactly one URI SAN and it is a valid id.
    pub spiffe_id: Option<SpiffeId>,
    /// Every URI SAN, verbatim (for a CA this is `spiffe://<td>`).
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP address SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// Whether basic constraints say `CA:TRUE`.
    pub is_ca: bool,
    /// SHA-256 of the DER certificate, lowercase hex without separators.
    pub sha256_fingerprint: String,
}

/// Summarizes the first certificate in `cert_pem`.
///
/// This only describes the certificate; it does not verify it against any CA.
pub fn summary(cert_pem: &[u8]) -> Result<CertSummary, Error> {
    let der = first_certificate(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| Error::MalformedCertificate(e.to_string()))?;
    let malformed = |e: x509_parser::error::X509Error| Error::MalformedCertificate(e.to_string());

    let (mut uris, mut dns_names, mut ip_addresses) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(san) = cert.subject_alternative_name().map_err(malformed)? {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        ip_addresses.push(ip);
                    }
                }
                _ => {}
            }
        }
    }
    let spiffe_id = match uris.as_slice() {
        [uri] => uri.parse().ok(),
        _ => None,
    };
    let is_ca = cert
        .basic_constraints()
        .map_err(malformed)?
        .is_some_and(|bc| bc.value.ca);

    Ok(CertSummary {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial_hex: hex(cert.raw_serial()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        spiffe_id,
        uris,
        dns_names,
        ip_addresses,
        is_ca,
        sha256_fingerprint: hex(ring::digest::digest(&ring::digest::SHA256, &der).as_ref()),
    })
}

impl fmt::Display for CertSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let date = |t: &OffsetDateTime| t.format(&Rfc3339).unwrap_or_else(|_| t.to_string());
        let list = |items: Vec<String>| {
            if items.is_empty() {
                "-".to_owned()
            } else {
                items.join(", ")
            }
        };
        writeln!(f, "subject:     {}", self.subject)?;
        writeln!(f, "issuer:      {}", self.issuer)?;
        writeln!(f, "serial:      {}", self.serial_hex)?;
        writeln!(f, "not before:  {}", date(&self.not_before))?;
        writeln!(f, "not after:   {}", date(&self.not_after))?;
        match &self.spiffe_id {
            Some(id) => writeln!(f, "spiffe id:   {id}")?,
            None => writeln!(f, "spiffe id:   -")?,
        }
        if self.spiffe_id.is_none() || self.uris.len() > 1 {
            writeln!(f, "uri sans:    {}", list(self.uris.clone()))?;
        }
        writeln!(f, "dns names:   {}", list(self.dns_names.clone()))?;
        let ips = self.ip_addresses.iter().map(IpAddr::to_string).collect();
        writeln!(f, "ip addrs:    {}", list(ips))?;
        writeln!(f, "ca:          {}", if self.is_ca { "yes" } else { "no" })?;
        write!(f, "sha256:      {}", self.sha256_fingerprint)
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Some(IpAddr::from(v4))
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        Some(IpAddr::from(v6))
    } else {
        None
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Ca, Name, Role, TrustDomain};

    #[test]
    fn summarizes_a_service_certificate() {
        let ca = Ca::init(&TrustDomain::new("example.org").unwrap()).unwrap();
        let issued = ca
            .issue(
                Role::Custodian,
                &Name::new("c1").unwrap(),
                &["c1.example.org".into()],
                &["127.0.0.1".parse().unwrap()],
                Duration::from_secs(86_400),
            )
            .unwrap();
        let s = summary(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(s.spiffe_id, Some(issued.spiffe_id.clone()));
        assert_eq!(
            s.uris,
            vec!["spiffe://example.org/custodian/c1".to_string()]
        );
        assert_eq!(s.dns_names, vec!["c1.example.org".to_string()]);
        assert_eq!(s.ip_addresses, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(!s.is_ca);
        assert_eq!(s.subject, "OU=custodian, CN=c1");
        assert_eq!(s.issuer, "CN=example.org CA");
        assert_eq!(s.serial_hex.len(), 32);
        assert_eq!(s.sha256_fingerprint.len(), 64);
        assert!(s.not_before < s.not_after);

        let text = s.to_string();
        assert!(
            text.contains("spiffe id:   spiffe://example.org/custodian/c1"),
            "{text}"
        );
        assert!(text.contains("dns names:   c1.example.org"), "{text}");
        assert!(text.contains("ip addrs:    127.0.0.1"), "{text}");
        assert!(text.contains("ca:          no"), "{text}");
        assert!(!text.contains("uri sans"), "{text}");

        let ca_summary = summary(ca.cert_pem().as_bytes()).unwrap();
        assert!(ca_summary.is_ca);
        assert_eq!(ca_summary.spiffe_id, None);
        assert_eq!(ca_summary.uris, vec!["spiffe://example.org".to_string()]);
        assert_eq!(ca_summary.subject, ca_summary.issuer);
        assert_ne!(ca_summary.sha256_fingerprint, s.sha256_fingerprint);
        assert!(ca_summary
            .to_string()
            .contains("uri sans:    spiffe://example.org"));
    }

    #[test]
    fn fingerprint_is_sha256_of_der() {
        let ca = Ca::init(&TrustDomain::new("example.org").unwrap()).unwrap();
        let s = summary(ca.cert_pem().as_bytes()).unwrap();
        let expected = hex(ring::digest::digest(&ring::digest::SHA256, ca.cert_der()).as_ref());
        assert_eq!(s.sha256_fingerprint, expected);
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
    }

    #[test]
    fn rejects_non_certificates() {
        assert!(matches!(summary(b""), Err(Error::NoCertificate)));
        assert!(matches!(summary(b"\xff\xfe"), Err(Error::NoCertificate)));
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(summary(key.as_bytes()), Err(Error::NoCertificate)));
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            summary(junk.as_bytes()),
            Err(Error::MalformedCertificate(_))
        ));
        let bad_b64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(summary(bad_b64.as_bytes()).is_err());
    }
}
