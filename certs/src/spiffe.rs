//! SPIFFE-style identities: `spiffe://<trust-domain>/<role>/<name>`.
//!
//! Every certificate this crate issues names exactly one such identity in a URI subject
//! alternative name, and services authorize a verified peer by it (never by a header or by the
//! subject's common name). The grammar is deliberately narrower than the SPIFFE specification:
//! one role segment from a closed set and one name segment of lowercase letters, digits and
//! hyphens, so that an id can be compared as a string and used in a file name without escaping.

use std::fmt;
use std::str::FromStr;

use x509_parser::extensions::GeneralName;

use crate::Error;

/// `FromStr` through the type's checking `new`, and `Display` as the checked text.
macro_rules! checked_text {
    ($ty:ident) => {
        impl FromStr for $ty {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Error> {
                Self::new(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// The URI scheme every SPIFFE id starts with.
const SCHEME: &str = "spiffe://";

/// The longest trust domain accepted, the longest DNS name.
const MAX_TRUST_DOMAIN_LEN: usize = 253;

/// The longest label inside a trust domain, and the longest [`Name`].
const MAX_LABEL_LEN: usize = 63;

/// A trust domain: a lowercase DNS-like name such as `prod.example.org`.
///
/// Labels are 1 to 63 characters of `a-z`, `0-9` and `-`, neither starting nor ending with `-`,
/// separated by single dots; the whole name is at most 253 characters. Upper case is rejected
/// rather than folded, so a certificate naming `Example.org` is refused, not silently accepted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses and validates a trust domain.
    pub fn new(input: &str) -> Result<Self, Error> {
        let reject = |reason| Error::InvalidTrustDomain {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(reject("it is empty"));
        }
        if input.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(reject("it is longer than 253 characters"));
        }
        for label in input.split('.') {
            if label.is_empty() {
                return Err(reject(
                    "it has an empty label (a leading, trailing or double dot)",
                ));
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(reject("a label is longer than 63 characters"));
            }
            if label.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(reject("it must be lowercase"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(reject("only a-z, 0-9, '-' and '.' are allowed"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(reject("a label may not start or end with '-'"));
            }
        }
        Ok(Self(input.to_owned()))
    }

    /// The trust domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URI naming the trust domain itself, `spiffe://<td>`, carried by the CA certificate.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }
}

checked_text!(TrustDomain);

/// What a certificate's holder is allowed to be: the second-to-last segment of a SPIFFE id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A custodian service: holds and seals shards. Acts as TLS server and client.
    Custodian,
    /// The enroller service: registers users, splits and deposits secrets. Server and client.
    Enroller,
    /// An operator: invitations and other admin verbs. TLS client only.
    Admin,
    /// An end user recovering their own secrets. TLS client only.
    User,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 4] = [Role::Custodian, Role::Enroller, Role::Admin, Role::User];

    /// The role's segment in a SPIFFE id.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Custodian => "custodian",
            Role::Enroller => "enroller",
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    /// Whether holders of this role run a TLS listener (and so need serverAuth and DNS/IP
    /// names in their certificates).
    pub fn is_service(self) -> bool {
        matches!(self, Role::Custodian | Role::Enroller)
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| Error::UnknownRole(s.to_owned()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last segment of a SPIFFE id: `[a-z0-9][a-z0-9-]{0,62}`, e.g. `c1` or `alice`.
///
/// The narrow alphabet keeps names safe in file names, log lines and URIs without escaping.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Parses and validates a name.
    pub fn new(input: &str) -> Result<Self, Error> {
        let reject = |reason| Error::InvalidName {
            input: input.to_owned(),
            reason,
        };
        let Some(first) = input.bytes().next() else {
            return Err(reject("it is empty"));
        };
        if input.len() > MAX_LABEL_LEN {
            return Err(reject("it is longer than 63 characters"));
        }
        if input.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(reject("it must be lowercase"));
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(reject("it must start with a-z or 0-9"));
        }
        if !input
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(reject("only a-z, 0-9 and '-' are allowed"));
        }
        Ok(Self(input.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

checked_text!(Name);

/// A workload or user identity, `spiffe://<trust-domain>/<role>/<name>`.
///
/// Parse one with [`str::parse`]; [`Display`](fmt::Display) gives back exactly the same text,
/// so ids compare equal as values and as strings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    role: Role,
    name: Name,
}

impl SpiffeId {
    /// Builds an id from its already-validated parts.
    pub fn new(trust_domain: TrustDomain, role: Role, name: Name) -> Self {
        Self {
            trust_domain,
            role,
            name,
        }
    }

    /// The trust domain the id belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The role of the holder.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The holder's name within its role.
    pub fn name(&self) -> &Name {
        &self.name
    }
}

impl FromStr for SpiffeId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let reject = |reason| Error::InvalidSpiffeId {
            input: s.to_owned(),
            reason,
        };
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| reject("it does not start with spiffe://"))?;
        let mut segments = rest.split('/');
        // `split` always yields at least one item, possibly empty.
        let td = segments.next().unwrap_or_default();
        let (Some(role), Some(name), None) = (segments.next(), segments.next(), segments.next())
        else {
            return Err(reject(
                "expected exactly spiffe://<trust-domain>/<role>/<name>",
            ));
        };
        let trust_domain =
            TrustDomain::new(td).map_err(|_| reject("the trust domain is not valid"))?;
        let role = role
            .parse::<Role>()
            .map_err(|_| reject("the role is not custodian, enroller, admin or user"))?;
        let name = Name::new(name).map_err(|_| reject("the name is not valid"))?;
        Ok(Self::new(trust_domain, role, name))
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/{}/{}",
            self.trust_domain, self.role, self.name
        )
    }
}

/// Extracts the single SPIFFE id from a DER certificate's URI subject alternative names.
///
/// Fails if the certificate has no URI SAN, more than one URI SAN (a SPIFFE certificate has
/// exactly one, so several would make the identity ambiguous), or a URI SAN that is not a valid
/// [`SpiffeId`]. This does **not** verify the certificate: call it on a chain that rustls has
/// already verified, e.g. through [`crate::tls::peer_spiffe_id`].
pub fn spiffe_id_from_der(cert_der: &[u8]) -> Result<SpiffeId, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| Error::MalformedCertificate(e.to_string()))?;
    let uris = uri_sans(&cert)?;
    match uris.as_slice() {
        [] => Err(Error::NoSpiffeId),
        [uri] => uri.parse(),
        several => Err(Error::SeveralUris(several.len())),
    }
}

/// All URI SANs of a parsed certificate, in order.
pub(crate) fn uri_sans<'a>(
    cert: &'a x509_parser::certificate::X509Certificate<'_>,
) -> Result<Vec<&'a str>, Error> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::MalformedCertificate(e.to_string()))?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(s: &str) -> TrustDomain {
        TrustDomain::new(s).expect("valid trust domain")
    }

    #[test]
    fn spiffe_ids_round_trip() {
        for text in [
            "spiffe://example.org/custodian/c1",
            "spiffe://prod.shard.example.org/enroller/main",
            "spiffe://a/admin/ops",
            "spiffe://x-1.y2/user/alice-2",
            "spiffe://td/user/0",
        ] {
            let id: SpiffeId = text.parse().expect(text);
            assert_eq!(id.to_string(), text);
        }
        let id: SpiffeId = "spiffe://example.org/custodian/c1".parse().unwrap();
        assert_eq!(id.trust_domain().as_str(), "example.org");
        assert_eq!(id.role(), Role::Custodian);
        assert_eq!(id.name().as_str(), "c1");
        let built = SpiffeId::new(td("example.org"), Role::Custodian, Name::new("c1").unwrap());
        assert_eq!(built, id);
    }

    #[test]
    fn spiffe_ids_rejected() {
        for text in [
            "",
            "spiffe://",
            "spiffe://example.org",
            "spiffe://example.org/",
            "spiffe://example.org/custodian",
            "spiffe://example.org/custodian/",
            "spiffe://example.org/custodian/c1/",
            "spiffe://example.org/custodian/c1/extra",
            "spiffe://example.org//c1",
            "spiffe:///custodian/c1",
            "SPIFFE://example.org/custodian/c1",
            "https://example.org/custodian/c1",
            "spiffe://Example.org/custodian/c1",
            "spiffe://example.org/Custodian/c1",
            "spiffe://example.org/root/c1",
            "spiffe://example.org/custodian/C1",
            "spiffe://example.org:443/custodian/c1",
            "spiffe://user@example.org/custodian/c1",
            "spiffe://example.org/custodian/c1?x=1",
            "spiffe://example.org/custodian/c1#frag",
            "spiffe://example.org/custodian/-c1",
            "spiffe://example.org/custodian/c%31",
            "spiffe://example.org/custodian/../admin",
            " spiffe://example.org/custodian/c1",
        ] {
            let err = text.parse::<SpiffeId>().expect_err(text);
            assert!(
                matches!(err, Error::InvalidSpiffeId { .. }),
                "{text}: {err:?}"
            );
        }
    }

    #[test]
    fn trust_domains() {
        for ok in ["example.org", "a", "a-b.c-d", "0.1.2", &"a".repeat(63)] {
            assert_eq!(TrustDomain::new(ok).expect(ok).as_str(), ok);
        }
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(long.len(), 253);
        assert!(TrustDomain::new(&long).is_ok());
        for bad in [
            "",
            ".",
            "example.org.",
            ".example.org",
            "a..b",
            "Example.org",
            "-a.org",
            "a-.org",
            "a_b.org",
            "a b",
            "a/b",
            "é.org",
            &"a".repeat(64),
            &format!("{long}a"),
        ] {
            let err = TrustDomain::new(bad).expect_err(bad);
            assert!(matches!(err, Error::InvalidTrustDomain { .. }), "{bad}");
        }
        assert_eq!(td("example.org").uri(), "spiffe://example.org");
    }

    #[test]
    fn names() {
        for ok in ["a", "0", "c1", "alice-smith", "a-", &"z".repeat(63)] {
            assert_eq!(Name::new(ok).expect(ok).as_str(), ok);
        }
        for bad in [
            "",
            "-a",
            "A",
            "alice.smith",
            "alice_smith",
            "a/b",
            "..",
            "a b",
            &"z".repeat(64),
        ] {
            let err = Name::new(bad).expect_err(bad);
            assert!(matches!(err, Error::InvalidName { .. }), "{bad}");
        }
        assert!(matches!(
            Name::new("C1"),
            Err(Error::InvalidName { reason, .. }) if reason.contains("lowercase")
        ));
    }

    #[test]
    fn roles() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!(Role::Custodian.is_service() && Role::Enroller.is_service());
        assert!(!Role::Admin.is_service() && !Role::User.is_service());
        assert!(matches!(
            "Admin".parse::<Role>(),
            Err(Error::UnknownRole(s)) if s == "Admin"
        ));
    }
}
